"""The closed-form 3×3 eigensolver against LAPACK, on the cases plane fits meet."""

from __future__ import annotations

import torch

from recon3d.points.eigh3 import eigh3


def _rotations(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, 3, 3, dtype=torch.float64, generator=g)).Q


def _with_values(values: list[float], n: int = 200, seed: int = 0) -> torch.Tensor:
    r = _rotations(n, seed)
    return r @ torch.diag_embed(torch.tensor(values, dtype=torch.float64).expand(n, 3)) @ r.transpose(1, 2)


def _check(matrices: torch.Tensor, value_tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    values, vectors = eigh3(matrices)
    reference, reference_vectors = torch.linalg.eigh(matrices)
    scale = matrices.norm(dim=(1, 2)).clamp_min(1e-300)[:, None]
    assert ((values - reference).abs() / scale).max() < value_tol
    assert (values[:, 1:] >= values[:, :-1]).all()
    residual = (matrices @ vectors - vectors * values[:, None, :]).norm(dim=(1, 2)) / scale[:, 0]
    assert residual.max() < 1e-7
    torch.testing.assert_close(vectors.transpose(1, 2) @ vectors, torch.eye(3, dtype=torch.float64).expand_as(vectors))
    return vectors, reference_vectors


def test_neighbourhood_covariances_planes_lines_and_blobs():
    g = torch.Generator().manual_seed(1)
    points = torch.randn(3000, 16, 3, dtype=torch.float64, generator=g)
    points[:1000, :, 2] *= 1e-3  # flat discs: one small value, a double one
    points[1000:2000, :, 1:] *= 1e-4  # lines: a double small value
    points = points @ _rotations(3000, 2)
    centred = points - points.mean(dim=1, keepdim=True)
    covariances = centred.transpose(1, 2) @ centred / 16
    vectors, reference = _check(covariances, 1e-12)
    # The discs' normals (their least-variance axis) agree with LAPACK's up to sign.
    assert (vectors[:1000, :, 0] * reference[:1000, :, 0]).sum(-1).abs().min() > 1 - 1e-9
    # A flat disc's smallest variance keeps its relative precision (Rayleigh quotient, not the cubic).
    values, _ = eigh3(covariances[:1000])
    exact, _ = torch.linalg.eigh(covariances[:1000])
    assert ((values[:, 0] - exact[:, 0]).abs() / exact[:, 0]).max() < 1e-6


def test_double_and_triple_and_zero_eigenvalues():
    for values in ([0.0, 1.0, 1.0], [1.0, 1.0, 2.0], [1e-12, 1e-3, 1.0], [-2.0, 0.5, 3.0]):
        _check(_with_values(values), 1e-7)
    _check(torch.eye(3, dtype=torch.float64).expand(4, 3, 3) * 3.0, 1e-12)
    values, vectors = eigh3(torch.zeros(3, 3, 3))
    assert values.eq(0).all() and torch.isfinite(vectors).all()


def test_scale_free_and_float32_input():
    matrices = _with_values([1.0, 2.0, 5.0], 50)
    for factor in (1e-30, 1e30):
        values, _ = eigh3(matrices * factor)
        torch.testing.assert_close(values / factor, torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64).expand(50, 3))
    values, vectors = eigh3(matrices.float())
    assert values.dtype == torch.float64 and vectors.dtype == torch.float64
