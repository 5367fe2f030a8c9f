"""Eigendecompositions of many symmetric 3×3 matrices in closed form, on any device.

LAPACK's batched solver runs on the CPU only (cuSOLVER's batched one fails on hundreds of thousands
of matrices), so a scan's plane fits copied every covariance to the host and back. The closed form
needs only elementwise arithmetic: the eigenvalues from the characteristic cubic by the trigonometric
method (Smith 1961), the eigenvector of the best-separated eigenvalue as the longest cross product of
two rows of A − λI, the other two from the 2×2 problem in the plane orthogonal to it (Eberly,
"A Robust Eigensolver for 3×3 Symmetric Matrices", 2014), and the values again as vᵀAv. Computed
in float64.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


def eigh3(matrices: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (n, 3), ascending, and eigenvectors (n, 3, 3; column j belongs to value j,
    orthonormal) of symmetric ``matrices`` (n, 3, 3), both float64 on their device.

    Where two eigenvalues coincide their eigenvectors are any orthonormal pair of that plane, as with
    ``torch.linalg.eigh``; signs are arbitrary, as there.
    """
    a = matrices.double()
    a = 0.5 * (a + a.transpose(1, 2))
    # Scale to a unit largest entry: the cubic's terms then neither overflow nor underflow.
    scale = a.abs().amax(dim=(1, 2)).clamp_min(torch.finfo(torch.float64).tiny)
    a = a / scale[:, None, None]
    vectors = _eigenvectors(a, _eigenvalues(a))
    # Rayleigh quotients: the cubic's roots lose about half the digits near a double root (a disc of
    # points), while each eigenvector, and so vᵀAv, is accurate when its eigenvalue is separated.
    values, order = torch.sort((vectors * (a @ vectors)).sum(dim=1), dim=-1)  # only ties can swap
    vectors = vectors.gather(2, order[:, None, :].expand(-1, 3, -1))
    return values * scale[:, None], vectors


def _eigenvalues(a: Tensor) -> Tensor:
    """(n, 3) ascending roots of det(A − λI) = 0 by the trigonometric method."""
    q = a.diagonal(dim1=1, dim2=2).sum(-1) / 3.0
    off = a[:, 0, 1] ** 2 + a[:, 0, 2] ** 2 + a[:, 1, 2] ** 2
    diag = (a.diagonal(dim1=1, dim2=2) - q[:, None]).square().sum(-1)
    p = torch.sqrt((diag + 2.0 * off) / 6.0)
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    b = (a - q[:, None, None] * eye) / torch.where(p > 0, p, 1.0)[:, None, None]
    r = (_det3(b) / 2.0).clamp(-1.0, 1.0)
    phi = torch.acos(r) / 3.0
    largest = q + 2.0 * p * torch.cos(phi)
    smallest = q + 2.0 * p * torch.cos(phi + 2.0 * math.pi / 3.0)
    middle = 3.0 * q - largest - smallest
    return torch.sort(torch.stack([smallest, middle, largest], dim=-1), dim=-1).values


def _det3(m: Tensor) -> Tensor:
    """(n,) determinants of (n, 3, 3) matrices, written out (a batched LU is far slower on a GPU)."""
    return (m[:, 0, 0] * (m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1])
            - m[:, 0, 1] * (m[:, 1, 0] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 0])
            + m[:, 0, 2] * (m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0]))


def _eigenvectors(a: Tensor, values: Tensor) -> Tensor:
    """(n, 3, 3) orthonormal eigenvectors (columns) for ascending ``values`` (n, 3)."""
    low_gap = values[:, 1] - values[:, 0]
    high_gap = values[:, 2] - values[:, 1]
    # The eigenvalue farthest from the others has the best-conditioned eigenvector.
    first_is_smallest = low_gap >= high_gap
    separated = torch.where(first_is_smallest, values[:, 0], values[:, 2])
    v = _null_vector(a, separated)
    u, w = _complement(v)
    # The 2×2 problem in the plane (u, w): M = [u w]ᵀ A [u w], rotated by θ onto its eigenvectors.
    au, aw = a @ u[..., None], a @ w[..., None]
    m00 = (u[..., None] * au).sum((1, 2))
    m11 = (w[..., None] * aw).sum((1, 2))
    m01 = (u[..., None] * aw).sum((1, 2))
    theta = 0.5 * torch.atan2(2.0 * m01, m00 - m11)
    c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    major = c * u + s * w  # the larger eigenvalue of M
    minor = -s * u + c * w
    # Smallest separated: (v, minor, major); largest separated: (minor, major, v).
    first = torch.where(first_is_smallest[:, None], v, minor)
    second = torch.where(first_is_smallest[:, None], minor, major)
    third = torch.cross(first, second, dim=-1)
    return torch.stack([first, second, third], dim=-1)


def _null_vector(a: Tensor, value: Tensor) -> Tensor:
    """(n, 3) unit vector of the null space of A − λI for a simple eigenvalue λ: the longest cross
    product of two of its rows (any unit vector where the matrix is λI)."""
    eye = torch.eye(3, dtype=a.dtype, device=a.device)
    rows = a - value[:, None, None] * eye
    r0, r1, r2 = rows[:, 0], rows[:, 1], rows[:, 2]
    crosses = torch.stack([torch.cross(r0, r1, dim=-1), torch.cross(r0, r2, dim=-1),
                           torch.cross(r1, r2, dim=-1)], dim=1)  # (n, 3, 3)
    lengths = crosses.norm(dim=-1)
    best = lengths.argmax(dim=1)
    chosen = crosses[torch.arange(len(a), device=a.device), best]
    length = lengths.gather(1, best[:, None])
    fallback = torch.zeros_like(chosen)
    fallback[:, 0] = 1.0
    return torch.where(length > 0, chosen / length.clamp_min(torch.finfo(a.dtype).tiny), fallback)


def _complement(v: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors (n, 3) that make (u, w, v) a right-handed orthonormal frame for unit ``v``."""
    # Cross with the axis least aligned with v: never near-parallel.
    axis = torch.zeros_like(v)
    axis[torch.arange(len(v), device=v.device), v.abs().argmin(dim=1)] = 1.0
    u = torch.nn.functional.normalize(torch.cross(axis, v, dim=-1), dim=-1)
    w = torch.cross(v, u, dim=-1)
    return u, w
