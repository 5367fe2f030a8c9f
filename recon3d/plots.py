"""Training curves as PNG pictures, drawn with Pillow (no plotting library needed).

:func:`history_picture` draws the loss of a fit's history against the step on a log scale and, when the
history has one (fits to images), the training PSNR on a second panel; :func:`write_history_plot` writes
it atomically (``recon3d fit-* --plot``, ``recon3d info --plot``).
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

#: Picture size in pixels and the plot area's margins (left, top, right, bottom).
WIDTH, PANEL_HEIGHT = 720, 300
MARGIN = (70, 34, 20, 40)
LOSS_COLOUR, PSNR_COLOUR, GRID_COLOUR, TEXT_COLOUR = (31, 119, 180), (214, 39, 40), (225, 225, 225), (40, 40, 40)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values spanning [low, high] (linear scale)."""
    if not high > low:
        return [low]
    raw = (high - low) / max(count, 1)
    step = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * step:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + k * step for k in range(int((high - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.2e}"


def _panel(draw, box: tuple[int, int, int, int], steps: np.ndarray, values: np.ndarray, log: bool,
           colour: tuple[int, int, int], title: str) -> None:
    """One curve in ``box`` (left, top, right, bottom) with its grid, tick labels and title."""
    left, top, right, bottom = box
    finite = np.isfinite(values) & np.isfinite(steps) & ((values > 0) if log else True)
    draw.rectangle(box, outline=(160, 160, 160))
    draw.text((left, top - 18), title, fill=TEXT_COLOUR)
    if not finite.any():
        draw.text((left + 10, top + 10), "no finite values", fill=TEXT_COLOUR)
        return
    xs, ys = steps[finite].astype(np.float64), values[finite].astype(np.float64)
    ys_scaled = np.log10(ys) if log else ys
    x0, x1 = float(xs.min()), float(xs.max())
    y0, y1 = float(ys_scaled.min()), float(ys_scaled.max())
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top))

    if log:
        ticks = [float(e) for e in range(math.floor(y0), math.ceil(y1) + 1) if y0 <= e <= y1]
        if len(ticks) < 2:
            ticks = _nice_ticks(y0, y1, 4)
        labels = [_label(10**t) for t in ticks]
    else:
        ticks = _nice_ticks(y0, y1, 5)
        labels = [_label(t) for t in ticks]
    for tick, label in zip(ticks, labels):
        _, y = to_pixel(x0, tick)
        draw.line([(left, y), (right, y)], fill=GRID_COLOUR)
        draw.text((left - 8 - 6 * len(label), y - 6), label, fill=TEXT_COLOUR)
    for tick in _nice_ticks(x0, x1, 6):
        x, _ = to_pixel(tick, y0)
        draw.line([(x, top), (x, bottom)], fill=GRID_COLOUR)
        label = f"{tick:.0f}"
        draw.text((x - 3 * len(label), bottom + 6), label, fill=TEXT_COLOUR)
    points = [to_pixel(x, y) for x, y in zip(xs, ys_scaled)]
    if len(points) == 1:
        x, y = points[0]
        draw.ellipse([(x - 2, y - 2), (x + 2, y + 2)], fill=colour)
    else:
        draw.line(points, fill=colour, width=2)
    draw.text((right - 60, bottom + 22), "step", fill=TEXT_COLOUR)


def history_picture(history: Sequence[Sequence[float]], terms: Sequence[str], title: str = "") -> np.ndarray:
    """(H, W, 3) uint8: the loss against the step (log scale) and, when ``terms`` has ``psnr``, the
    training PSNR below it. ``history`` rows are [step, loss, term…] with ``terms`` naming loss and the rest."""
    from PIL import Image, ImageDraw

    rows = np.asarray([list(map(float, row)) for row in history], dtype=np.float64).reshape(len(history), -1)
    terms = list(terms) or ["loss"]
    panels = [("loss", True, LOSS_COLOUR)]
    if "psnr" in terms:
        panels.append(("psnr", False, PSNR_COLOUR))
    height = PANEL_HEIGHT * len(panels) + 24
    image = Image.new("RGB", (WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((MARGIN[0], 4), title, fill=TEXT_COLOUR)
    left, top_margin, right_margin, bottom_margin = MARGIN
    for k, (name, log, colour) in enumerate(panels):
        top = 24 + k * PANEL_HEIGHT + top_margin
        bottom = 24 + (k + 1) * PANEL_HEIGHT - bottom_margin
        column = 1 + terms.index(name) if name in terms else 1
        values = rows[:, column] if len(rows) and rows.shape[1] > column else np.zeros(0)
        steps = rows[:, 0] if len(rows) else np.zeros(0)
        heading = "loss (log scale)" if log else ("training PSNR, dB" if name == "psnr" else name)
        _panel(draw, (left, top, WIDTH - right_margin, bottom), steps, values, log, colour, heading)
    return np.asarray(image)


def png(picture: np.ndarray) -> bytes:
    """PNG bytes of a (H, W, 3) uint8 picture."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def write_history_plot(path: str | os.PathLike, train: dict, title: str = "") -> Path:
    """Write the PNG of a checkpoint's ``train`` record (its ``history`` and ``history_terms``) atomically."""
    from recon3d.errors import Recon3dError
    from recon3d.io.atomic import atomic_write_bytes

    history = train.get("history") or []
    if not history:
        raise Recon3dError(f"{path}: nothing to plot: the checkpoint holds no loss history")
    picture = history_picture(history, train.get("history_terms") or ["loss"], title)
    atomic_write_bytes(path, png(picture))
    return Path(path)
