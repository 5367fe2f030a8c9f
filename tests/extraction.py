"""Extraction of a plain function for tests: the function with its level, inside side and Lipschitz
bound as a Surface, and the remaining keywords as ExtractOptions."""

from __future__ import annotations

from typing import Any

import numpy as np

from recon3d.fields.surface import FieldFn, Surface
from recon3d.mesh.extract import ExtractOptions, ExtractResult, extract_mesh


def extract(fn: FieldFn, bounds: np.ndarray, resolution: int = 256, *, level: float = 0.0, inside: str = "below",
            lipschitz: float | None = None, device: Any = "cpu", progress: Any = None, support: Any = None,
            **options: Any) -> ExtractResult:
    surface = Surface(fn, level, inside, lipschitz=lipschitz)
    return extract_mesh(surface, bounds, ExtractOptions(resolution=resolution, **options), device, support, progress)
