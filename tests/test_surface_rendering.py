"""The pieces of surfaces from images against references that cannot lie: NeuS weights by hand,
alpha compositing by hand, secant root finding on analytic fields, DVR's implicit gradient against
finite differences, the visual hull of a sphere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon3d.render.compositing import composite_alphas, composite_alphas_packed
from recon3d.render.hull import hull_box, visual_hull
from recon3d.render.neus import neus_alphas, shell_alphas
from recon3d.render.surface import differentiable_hits, find_surface
from recon3d.synthetic import look_at, pinhole_rays

pytestmark = pytest.mark.usefixtures("one_thread")


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_neus_alpha_of_a_plane_crossing_matches_the_formula_by_hand():
    """A ray hits the plane f(x) = -x head-on (cos = -1): the interval [t - δ/2, t + δ/2] around the
    midpoint SDF f_m has ends f_m ± δ/2 exactly, so α = (Φ(s(f_m + δ/2)) - Φ(s(f_m - δ/2))) / Φ(s(f_m + δ/2))."""
    s, delta = 20.0, 0.1
    for f_mid in (0.3, 0.05, 0.0, -0.05, -0.3):
        prev, nxt = sigmoid(s * (f_mid + delta / 2)), sigmoid(s * (f_mid - delta / 2))
        expected = max((prev - nxt + 1e-5) / (prev + 1e-5), 0.0)
        got = neus_alphas(torch.tensor([f_mid]), torch.tensor([-1.0]), torch.tensor([delta]), s)
        assert float(got) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # Leaving the surface (cos = +1) with the full estimate gives no opacity at all.
    assert float(neus_alphas(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([delta]), s)) < 1e-4
    # The grid's test is the head-on value: an upper bound of the interval's opacity.
    assert float(shell_alphas(torch.tensor([0.05]), s, delta)) == pytest.approx(
        float(neus_alphas(torch.tensor([0.05]), torch.tensor([-1.0]), torch.tensor([delta]), s)), rel=1e-6)


def test_neus_weights_concentrate_at_the_crossing_of_a_sphere():
    """Packed samples along a ray through the unit sphere SDF: the weights peak at the entry point and
    sum to ~1 (the ray is stopped), so the expected depth is the entry distance."""
    t = torch.linspace(0.0, 4.0, 801)
    t_starts, t_ends = t[:-1], t[1:]
    mids = 0.5 * (t_starts + t_ends)
    origin, direction = torch.tensor([-2.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    points = origin + mids[:, None] * direction
    sdf = points.norm(dim=-1) - 1.0
    grad = points / points.norm(dim=-1, keepdim=True)
    alphas = neus_alphas(sdf, (grad * direction).sum(-1), t_ends - t_starts, 200.0)
    rays = torch.zeros(len(mids), dtype=torch.int64)
    result = composite_alphas_packed(rays, alphas, torch.ones(len(mids), 3), t_starts, t_ends, 1)
    assert float(result.opacity) == pytest.approx(1.0, abs=1e-3)
    assert float(result.expected_depth) == pytest.approx(1.0, abs=0.01)  # enters at t = 1


def test_alpha_compositing_by_hand():
    """Two samples with α = 0.5 and 0.5: weights 0.5 and 0.25; colour 0.5 c1 + 0.25 c2 + 0.25 background."""
    alphas = torch.tensor([[0.5, 0.5]])
    rgbs = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    starts, ends = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]])
    result = composite_alphas(alphas, rgbs, starts, ends, torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(result.weights, torch.tensor([[0.5, 0.25]]))
    torch.testing.assert_close(result.rgb, torch.tensor([[0.5, 0.25, 0.25]]))
    packed = composite_alphas_packed(torch.tensor([0, 0]), alphas[0], rgbs[0], starts[0], ends[0], 1,
                                     torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(packed.rgb, result.rgb)


def test_binary_entropy_by_hand_and_its_pull():
    """UNISURF's binary prior: entropy log 2 at o = 0.5, −(¾ ln ¾ + ¼ ln ¼) at o = ¾, 0 at saturated logits;
    its gradient moves an occupancy away from 0.5, towards the side it is on."""
    from recon3d.fit.losses import binary_entropy

    logits = torch.tensor([0.0, math.log(3.0), 60.0, -60.0])
    each = [binary_entropy(logits[i:i + 1]).item() for i in range(4)]
    assert each == pytest.approx([math.log(2.0), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), 0.0, 0.0], abs=1e-6)
    pulled = torch.tensor([1.5, -1.5], requires_grad=True)
    binary_entropy(pulled).backward()
    assert pulled.grad[0] < 0 < pulled.grad[1]  # descent raises a high logit and lowers a low one


def test_unisurf_interval_samples_by_hand():
    """A ray hitting at t = 2 in the span [1, 5] with Δ = 0.5: bin centres put 2 samples at 1.75 and 2.25 and
    2 in front at 1.125 and 1.375; intervals run between midpoints, from 1 to 5. A ray that misses spreads its
    inside samples over the whole span and collapses the others onto its entry."""
    from recon3d.render.unisurf import bin_centres, interval_samples

    t0, t1 = torch.tensor([1.0, 1.0]), torch.tensor([5.0, 5.0])
    t, starts, ends = interval_samples(t0, t1, torch.tensor([2.0, 5.0]), torch.tensor([True, False]), 0.5,
                                       bin_centres(2, 2, torch.device("cpu")), bin_centres(2, 2, torch.device("cpu")))
    torch.testing.assert_close(t[0], torch.tensor([1.125, 1.375, 1.75, 2.25]))
    torch.testing.assert_close(starts[0], torch.tensor([1.0, 1.25, 1.5625, 2.0]))
    torch.testing.assert_close(ends[0], torch.tensor([1.25, 1.5625, 2.0, 5.0]))
    torch.testing.assert_close(t[1], torch.tensor([1.0, 1.0, 2.0, 4.0]))


@pytest.mark.parametrize("inside", ["below", "above"])
def test_secant_finds_the_first_crossing_of_analytic_fields(inside):
    """Rays towards two spheres in a row: the first crossing is the near sphere's entry, found to
    1e-5 by the secant method from a coarse search of 32 samples; a ray that misses says so."""
    def sdf(p: torch.Tensor) -> torch.Tensor:
        near = (p - torch.tensor([0.0, 0.0, 0.0])).norm(dim=-1) - 0.5
        far = (p - torch.tensor([2.0, 0.0, 0.0])).norm(dim=-1) - 0.5
        return torch.minimum(near, far)

    fn = sdf if inside == "below" else (lambda p: -10.0 * sdf(p))
    heights = torch.tensor([0.0, 0.3, 0.45, 0.9])
    origins = torch.stack([torch.full_like(heights, -2.0), heights, torch.zeros_like(heights)], dim=-1)
    directions = torch.tensor([[1.0, 0.0, 0.0]]).expand(4, 3)
    t, hit = find_surface(fn, origins, directions, torch.zeros(4), torch.full((4,), 5.0), inside=inside,
                          coarse=32, secant=8)
    expected = 2.0 - torch.sqrt(0.25 - heights[:3] ** 2)
    assert hit.tolist() == [True, True, True, False]
    torch.testing.assert_close(t[:3], expected, atol=1e-5, rtol=0)
    assert float(t[3]) == 5.0


def test_implicit_gradient_of_the_hit_point_matches_finite_differences():
    """DVR: the hit point of a ray on a sphere of learnable radius r moves with r exactly as the
    geometry says (∂t/∂r = r / sqrt(r² - h²) for a ray at height h), by implicit differentiation."""
    radius = torch.tensor(0.6, requires_grad=True)

    def value_and_grad(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = points.norm(dim=-1)
        return norm - radius, points / norm[:, None]

    h = 0.3
    origins, directions = torch.tensor([[-2.0, h, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    with torch.no_grad():
        t, _ = find_surface(lambda p: p.norm(dim=-1) - radius, origins, directions, torch.zeros(1),
                            torch.full((1,), 4.0), inside="below")
    point = differentiable_hits(value_and_grad, origins, directions, t)
    (d_point,) = torch.autograd.grad(point[0, 0], radius)
    eps = 1e-4
    hit = lambda r: 2.0 - math.sqrt(r * r - h * h)  # noqa: E731
    finite = (hit(0.6 + eps) - hit(0.6 - eps)) / (2 * eps)  # x of the hit = -2 + t
    assert float(point[0, 0].detach()) == pytest.approx(-2.0 + hit(0.6), abs=1e-5)  # the value is the hit itself
    assert float(d_point) == pytest.approx(finite, rel=1e-3)
    assert float(d_point) == pytest.approx(-0.6 / math.sqrt(0.36 - h * h), rel=1e-3)


def test_visual_hull_of_a_sphere_holds_it_and_little_else():
    """Masks of a sphere of radius 0.5 seen from 24 cameras around it: every lattice point of the
    sphere is in the hull, no point farther than 0.9 from the centre is (the masks are dilated by a
    lattice cell's footprint, so the hull is conservative), and the hull's box hugs it."""
    size, angle = 48, 0.6911
    k = np.arange(24) + 0.5  # a Fibonacci sphere of camera positions, radius 3
    z = 1.0 - 2.0 * k / 24
    azimuth = np.pi * (1.0 + 5.0**0.5) * k
    eyes = 3.0 * np.stack([np.sqrt(1 - z * z) * np.cos(azimuth), np.sqrt(1 - z * z) * np.sin(azimuth), z], -1)
    poses = torch.as_tensor(np.stack([look_at(eye) for eye in eyes]), dtype=torch.float32)
    alphas = []
    for pose in poses.numpy():
        origins, directions = pinhole_rays(pose, size, size, angle)
        b = np.sum(origins * directions, axis=-1)
        disc = b * b - (np.sum(origins * origins, axis=-1) - 0.25)
        alphas.append((disc > 0) & (-b > 0))
    alphas = torch.as_tensor(np.stack(alphas), dtype=torch.float32)
    focal = 0.5 * size / math.tan(0.5 * angle)
    n = len(poses)
    box = torch.tensor([[-1.5] * 3, [1.5] * 3])
    hull = visual_hull(poses, torch.full((n,), focal), torch.full((n,), focal), torch.full((n,), size / 2),
                       torch.full((n,), size / 2), alphas, box, resolution=32)
    cells = (torch.arange(32) + 0.5) / 32 * 3.0 - 1.5
    grid = torch.stack(torch.meshgrid(cells, cells, cells, indexing="ij"), dim=-1)
    radius = grid.norm(dim=-1)
    assert bool(hull[radius < 0.5].all())
    assert not bool(hull[radius > 0.9].any())
    lo, hi = hull_box(hull, box)
    assert bool((lo > -1.0).all()) and bool((hi < 1.0).all()) and bool((lo < -0.5).all())



def test_contraction_and_background_compositing():
    """Contraction keeps the unit ball and maps everything else into the ball of radius 2; an empty
    background field lets the colour behind through, an opaque one shows its own colour."""
    from recon3d.render.background import FAR, background_samples, box_exit, contract, render_background

    points = torch.tensor([[0.5, 0.0, 0.0], [2.0, 0.0, 0.0], [1e6, 0.0, 0.0]])
    contracted = contract(points)
    torch.testing.assert_close(contracted[0], points[0])
    torch.testing.assert_close(contracted[1], torch.tensor([1.5, 0.0, 0.0]))
    assert 1.99 < float(contracted[2].norm()) <= 2.0
    t = background_samples(torch.tensor([1.0, 3.0]), 8, train=False)
    assert bool((t[:, 1:] > t[:, :-1]).all()) and float(t.min()) > 1.0 and float(t.max()) < FAR

    class Uniform(torch.nn.Module):
        def __init__(self, sigma: float) -> None:
            super().__init__()
            self.sigma = sigma

        def forward(self, x, d):
            return torch.full(x.shape[:-1], self.sigma), torch.tensor([0.0, 1.0, 0.0]).expand(*x.shape[:-1], 3)

    origins, directions = torch.tensor([[0.0, 0.0, -3.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    box = torch.tensor([[-1.0] * 3, [1.0] * 3])
    exits = box_exit(origins, directions, box)
    assert float(exits[0]) == pytest.approx(4.0)
    behind = torch.tensor([1.0, 0.0, 0.0])
    empty = render_background(Uniform(0.0), origins, directions, exits, 16, behind)
    opaque = render_background(Uniform(1e4), origins, directions, exits, 16, behind)
    torch.testing.assert_close(empty[0], behind)
    torch.testing.assert_close(opaque[0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-4, rtol=0)
