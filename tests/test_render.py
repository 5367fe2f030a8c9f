"""Rays, samplers, occupancy grid and compositing against hand-computed and analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon3d.render.compositing import (
    accumulate_packed,
    composite,
    composite_packed,
    exclusive_sum_packed,
    render_weights,
    render_weights_packed,
)
from recon3d.render.rays import Rays, RaySampler, camera_rays, distort, ray_aabb, undistort
from recon3d.render.samplers import (
    OccupancyGrid,
    importance_samples,
    packed_positions,
    sample_pdf,
    samples_to_intervals,
    stratified_samples,
)
from recon3d.synthetic import look_at

LN2 = math.log(2.0)


def _packed(mask: torch.Tensor, *tensors: torch.Tensor):
    """Padded (R, S, ...) tensors -> packed samples where ``mask`` (R, S) is true."""
    ray_indices = torch.arange(mask.shape[0])[:, None].expand_as(mask)[mask]
    return (ray_indices, *(t[mask] for t in tensors))


# ------------------------------------------------------------------------------- compositing


def test_one_opaque_sample_gives_its_colour():
    sigmas = torch.tensor([[0.0, 1e4, 0.0]])
    rgbs = torch.tensor([[[1.0, 0.0, 0.0], [0.2, 0.4, 0.6], [0.0, 1.0, 0.0]]])
    starts, ends = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[2.0, 3.0, 4.0]])
    for out in (
        composite(sigmas, rgbs, starts, ends, background=(1.0, 1.0, 1.0)),
        composite_packed(*_packed(torch.ones(1, 3, dtype=torch.bool), sigmas, rgbs, starts, ends),
                         n_rays=1, background=(1.0, 1.0, 1.0)),  # fmt: skip
    ):
        torch.testing.assert_close(out.rgb, torch.tensor([[0.2, 0.4, 0.6]]))
        torch.testing.assert_close(out.opacity, torch.tensor([1.0]))
        torch.testing.assert_close(out.depth, torch.tensor([2.5]))
        torch.testing.assert_close(out.weights.reshape(-1), torch.tensor([0.0, 1.0, 0.0]))


def test_empty_space_gives_background():
    sigmas = torch.zeros(2, 4)
    rgbs = torch.rand(2, 4, 3)
    t = torch.linspace(2.0, 6.0, 5).expand(2, 5)
    bg = torch.tensor([0.1, 0.5, 0.9])
    out = composite(sigmas, rgbs, t[:, :-1], t[:, 1:], background=bg)
    torch.testing.assert_close(out.rgb, bg.expand(2, 3))
    assert out.opacity.eq(0).all() and out.depth.eq(0).all()
    empty = torch.empty(0)
    packed = composite_packed(empty.long(), empty, torch.empty(0, 3), empty, empty, 2, background=bg)
    torch.testing.assert_close(packed.rgb, bg.expand(2, 3))
    assert packed.opacity.eq(0).all() and packed.weights.numel() == 0


def test_two_half_transparent_samples():
    c1, c2 = torch.tensor([0.2, 0.4, 0.8]), torch.tensor([1.0, 0.0, 0.5])
    sigmas = torch.tensor([[LN2, LN2 / 2.0]])  # alpha = 0.5 each (the second is twice as long)
    rgbs = torch.stack([c1, c2])[None]
    starts, ends = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 3.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    for out in (composite(sigmas, rgbs, starts, ends),
                composite_packed(*_packed(mask, sigmas, rgbs, starts, ends), n_rays=1)):  # fmt: skip
        torch.testing.assert_close(out.weights.reshape(-1), torch.tensor([0.5, 0.25]))
        torch.testing.assert_close(out.opacity, torch.tensor([0.75]))
        torch.testing.assert_close(out.rgb[0], 0.5 * c1 + 0.25 * c2)
        torch.testing.assert_close(out.depth, torch.tensor([0.5 * 0.5 + 0.25 * 2.0]))
    same = composite(sigmas, torch.stack([c1, c1])[None], starts, ends, background=(1, 1, 1))
    torch.testing.assert_close(same.rgb[0], 0.75 * c1 + 0.25)
    weights, transmittance, alphas = render_weights(sigmas, ends - starts)
    torch.testing.assert_close(alphas, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(transmittance, torch.tensor([[1.0, 0.5]]))


def _random_rays(seed: int = 0, n_rays: int = 9, n_samples: int = 6):
    g = torch.Generator().manual_seed(seed)
    sigmas = torch.rand(n_rays, n_samples, generator=g) * 3.0
    rgbs = torch.rand(n_rays, n_samples, 3, generator=g)
    edges = torch.sort(torch.rand(n_rays, n_samples + 1, generator=g) * 4.0 + 2.0, dim=-1).values
    mask = torch.rand(n_rays, n_samples, generator=g) > 0.3
    mask[3] = False  # a ray without samples
    mask[5] = True
    return sigmas, rgbs, edges[:, :-1], edges[:, 1:], mask


def test_packed_equals_padded_with_gradients():
    sigmas, rgbs, starts, ends, mask = _random_rays()
    bg = torch.tensor([0.3, 0.6, 0.9])
    sig_a, rgb_a = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    sig_b, rgb_b = sigmas.clone().requires_grad_(), rgbs.clone().requires_grad_()
    padded = composite(sig_a * mask, rgb_a, starts, ends, background=bg)
    packed = composite_packed(*_packed(mask, sig_b, rgb_b, starts, ends), n_rays=9, background=bg)
    torch.testing.assert_close(packed.rgb, padded.rgb)
    torch.testing.assert_close(packed.opacity, padded.opacity)
    torch.testing.assert_close(packed.depth, padded.depth)
    torch.testing.assert_close(packed.weights, padded.weights[mask])
    torch.testing.assert_close(padded.rgb[3], bg)
    target = torch.rand(9, 3, generator=torch.Generator().manual_seed(1))
    for out in (padded, packed):
        ((out.rgb - target) ** 2).sum().add(out.depth.sum() * 0.1).backward()
    for grad_a, grad_b in ((sig_a.grad, sig_b.grad), (rgb_a.grad, rgb_b.grad)):
        assert torch.isfinite(grad_b).all() and grad_b.abs().sum() > 0
        torch.testing.assert_close(grad_b[mask], grad_a[mask])
    assert rgb_b.grad[~mask].eq(0).all()


def test_packed_weights_match_per_ray_padded_on_long_batches():
    """Many rays with large optical depth: the float64 running sum keeps every ray exact."""
    g = torch.Generator().manual_seed(3)
    n_rays, n_samples = 2000, 16
    sigmas = torch.rand(n_rays, n_samples, generator=g) * 50.0
    deltas = torch.rand(n_rays, n_samples, generator=g) * 0.2
    padded, _, _ = render_weights(sigmas, deltas)
    rays = torch.arange(n_rays).repeat_interleave(n_samples)
    packed, _, _ = render_weights_packed(rays, sigmas.reshape(-1), deltas.reshape(-1))
    torch.testing.assert_close(packed.reshape(n_rays, n_samples), padded, atol=1e-6, rtol=1e-5)
    sums = accumulate_packed(packed, rays, n_rays)
    torch.testing.assert_close(sums, padded.sum(-1))


def test_exclusive_sum_packed_values_and_closed_form_gradient():
    """Rays of 1, 3, 0 (absent) and 5 samples: the sums restart at each ray and the hand-written
    backward matches finite differences."""
    rays = torch.tensor([0, 1, 1, 1, 3, 3, 3, 3, 3])
    values = torch.tensor([2.0, 1.0, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    expected = torch.tensor([0.0, 0.0, 1.0, 3.0, 0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(exclusive_sum_packed(rays, values), expected)
    x = torch.rand(9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: exclusive_sum_packed(rays, v), (x,))
    assert exclusive_sum_packed(rays, values.float()).dtype == torch.float32


# ---------------------------------------------------------------------------------- samplers


def test_stratified_samples_inside_and_sorted():
    near = torch.tensor([2.0, 0.5, 1.0])
    far = torch.tensor([6.0, 1.5, 1.0 + 1e-3])
    g = torch.Generator().manual_seed(0)
    t = stratified_samples(near, far, 32, train=True, generator=g)
    assert t.shape == (3, 32)
    assert (t >= near[:, None]).all() and (t <= far[:, None]).all()
    assert (t[:, 1:] >= t[:, :-1]).all()
    again = stratified_samples(near, far, 32, train=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t, again)
    mids = stratified_samples(2.0, 6.0, 4, train=False, n_rays=2)
    torch.testing.assert_close(mids, torch.tensor([[2.5, 3.5, 4.5, 5.5]] * 2))
    starts, ends = samples_to_intervals(t, near, far)
    torch.testing.assert_close(starts[:, 0], near)
    torch.testing.assert_close(ends[:, -1], far)
    torch.testing.assert_close(ends[:, :-1], starts[:, 1:])
    assert ((starts <= t) & (t <= ends)).all()


@pytest.mark.parametrize("train", [True, False])
def test_sample_pdf_concentrates_where_the_weight_is(train):
    n_rays, n_bins = 5, 64
    bins = torch.linspace(2.0, 6.0, n_bins + 1).expand(n_rays, n_bins + 1).contiguous()
    weights = torch.zeros(n_rays, n_bins)
    hot = torch.tensor([0, 10, 31, 50, 63])
    weights[torch.arange(n_rays), hot] = 1.0
    g = torch.Generator().manual_seed(0)
    t = sample_pdf(bins, weights, 128, train=train, generator=g)
    assert t.shape == (n_rays, 128)
    assert (t[:, 1:] >= t[:, :-1]).all()
    lo, hi = bins[0, hot][:, None], bins[0, hot + 1][:, None]
    inside = ((t >= lo) & (t <= hi)).float().mean(dim=1)
    assert (inside > 0.9).all(), inside
    flat = sample_pdf(bins, torch.zeros(n_rays, n_bins), 64, train=False)  # no weight: uniform
    assert flat.min() >= 2.0 and flat.max() <= 6.0 and flat[:, -1].min() > 5.9


def test_importance_samples_merge_and_detach():
    near, far = torch.full((4,), 2.0), torch.full((4,), 6.0)
    coarse = stratified_samples(near, far, 16, train=False)
    weights = torch.zeros(4, 16, requires_grad=True)
    with torch.no_grad():
        weights[:, 7] = 1.0
    t = importance_samples(coarse, weights, 32, near, far, train=True,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert t.shape == (4, 48) and not t.requires_grad
    assert (t[:, 1:] >= t[:, :-1]).all()
    starts, ends = samples_to_intervals(coarse, near, far)
    in_hot = ((t >= starts[:, 7:8]) & (t <= ends[:, 7:8])).sum(dim=1)
    assert (in_hot >= 30).all()


# -------------------------------------------------------------------------------------- rays


def test_centre_pixel_of_identity_camera_looks_down_minus_z():
    rays = camera_rays(torch.eye(4), 10.0, 10.0, 2.5, 2.5, width=5, height=5)
    assert rays.shape == (5, 5)
    torch.testing.assert_close(rays.directions[2, 2], torch.tensor([0.0, 0.0, -1.0]))
    torch.testing.assert_close(rays.origins, torch.zeros(5, 5, 3))
    assert rays.directions[0, 4, 0] > 0 and rays.directions[0, 4, 1] > 0  # top right: +x, +y
    torch.testing.assert_close(rays.directions.norm(dim=-1), torch.ones(5, 5))


def test_known_pixel_direction_and_pose():
    c2w = torch.tensor(look_at((1.0, -3.0, 2.0), target=(0.2, 0.1, -0.3)), dtype=torch.float32)
    fx, fy, cx, cy = 10.0, 12.0, 8.0, 6.0
    local = torch.tensor([(13 + 0.5 - cx) / fx, -(3 + 0.5 - cy) / fy, -1.0])
    expected = c2w[:3, :3] @ (local / local.norm())
    rays = camera_rays(c2w, fx, fy, cx, cy, pixels=torch.tensor([[13, 3]]))
    torch.testing.assert_close(rays.directions[0], expected)
    torch.testing.assert_close(rays.origins[0], c2w[:3, 3])
    full = camera_rays(c2w, fx, fy, cx, cy, width=16, height=12)
    torch.testing.assert_close(full.directions[3, 13], expected)
    centre = camera_rays(c2w, fx, fy, 8.0, 6.0, pixels=torch.tensor([[7, 5]]))  # (7.5, 5.5) ~ centre
    axis = -c2w[:3, 2]
    assert float(centre.directions[0] @ axis) > 0.99


def test_distortion_round_trip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, generator=g, dtype=torch.float64) * 1.2 - 0.6
    y = torch.rand(500, generator=g, dtype=torch.float64) * 1.0 - 0.5
    coeffs = torch.tensor([-0.25, 0.08, -0.01, 0.002, 1e-3, -2e-3], dtype=torch.float64)
    xd, yd = distort(x, y, coeffs)
    assert (xd - x).abs().max() > 1e-2  # the distortion is not negligible
    xu, yu = undistort(xd, yd, coeffs)
    torch.testing.assert_close(xu, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(yu, y, atol=1e-9, rtol=0)
    # Through camera_rays: project each ray back with the distortion, land on the pixel centre.
    fx, fy, cx, cy = 30.0, 32.0, 20.0, 15.0
    rays = camera_rays(torch.eye(4), fx, fy, cx, cy, width=40, height=30,
                       distortion=coeffs.float())  # fmt: skip
    d = rays.directions.double()
    xn, yn = d[..., 0] / -d[..., 2], -d[..., 1] / -d[..., 2]
    xp, yp = distort(xn, yn, coeffs)
    v, u = torch.meshgrid(torch.arange(30.0), torch.arange(40.0), indexing="ij")
    torch.testing.assert_close(xp * fx + cx, u.double() + 0.5, atol=1e-3, rtol=0)
    torch.testing.assert_close(yp * fy + cy, v.double() + 0.5, atol=1e-3, rtol=0)


def test_ray_aabb_hits_and_misses():
    aabb = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    origins = torch.tensor([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [3.0, 3.0, 5.0], [0.2, 0.1, 0.0],
                            [0.5, 5.0, 0.5], [2.0, 0.0, 0.0]])  # fmt: skip
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0],
                               [1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])  # fmt: skip
    t_near, t_far, hit = ray_aabb(origins, directions, aabb)
    assert hit.tolist() == [True, False, False, True, True, False]
    torch.testing.assert_close(t_near[[0, 3, 4]], torch.tensor([4.0, 0.0, 4.0]))
    torch.testing.assert_close(t_far[[0, 3, 4]], torch.tensor([6.0, 0.8, 6.0]))
    diagonal = torch.tensor([[1.0, 1.0, 1.0]]) / math.sqrt(3.0)
    t_near, t_far, hit = ray_aabb(-3.0 * diagonal, diagonal, aabb)
    assert hit.item()
    torch.testing.assert_close(t_far - t_near, torch.tensor([2.0 * math.sqrt(3.0)]))


def test_ray_sampler_is_deterministic_and_matches_pixels():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 6, 7, 3, generator=g)
    c2w = torch.stack([torch.tensor(look_at((4.0 * math.cos(a), 4.0 * math.sin(a), 1.0)),
                                    dtype=torch.float32) for a in (0.0, 2.0, 4.0)])  # fmt: skip
    fx = torch.tensor([8.0, 9.0, 10.0])
    sampler = RaySampler(images, c2w, fx, fx, torch.full((3,), 3.5), torch.full((3,), 3.0))
    assert len(sampler) == 3 * 6 * 7
    a = sampler.sample(64, torch.Generator().manual_seed(5))
    b = sampler.sample(64, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.rgb, b.rgb)
    assert torch.equal(a.pixels, b.pixels) and torch.equal(a.image_indices, b.image_indices)
    assert a.rays.shape == (64,) and a.rgb.shape == (64, 3)
    u, v = a.pixels[:, 0], a.pixels[:, 1]
    assert (u < 7).all() and (v < 6).all() and a.image_indices.unique().numel() == 3
    torch.testing.assert_close(a.rgb, images[a.image_indices, v, u])
    i = int(a.image_indices[0])
    one = camera_rays(c2w[i], fx[i], fx[i], 3.5, 3.0, width=7, height=6)
    torch.testing.assert_close(a.rays.directions[0], one.directions[v[0], u[0]])
    torch.testing.assert_close(a.rays.origins[0], c2w[i, :3, 3])


def test_rays_container():
    rays = Rays(torch.zeros(4, 5, 3), torch.ones(4, 5, 3))
    assert rays.viewdirs is rays.directions
    assert rays.flatten().shape == (20,) and len(rays[1:3]) == 2


# ---------------------------------------------------------------------------- occupancy grid

RADIUS = 0.5


def _sphere_density(points: torch.Tensor) -> torch.Tensor:
    return torch.where(points.norm(dim=-1) < RADIUS, 50.0, 0.0)


def _sphere_grid(resolution: int = 24) -> OccupancyGrid:
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution, warmup_steps=32,
                         update_every=4)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for step in range(0, 48, 4):  # warm-up (all cells) then subsets
        assert grid.maybe_update(step, _sphere_density, generator=g)
    assert not grid.maybe_update(5, _sphere_density)
    return grid


def test_occupancy_grid_marks_the_sphere():
    grid = _sphere_grid()
    distance = grid.cell_centers().norm(dim=-1)
    half_diagonal = math.sqrt(3.0) / grid.resolution  # cells are 2 / res wide
    assert grid.occupied[distance < RADIUS - half_diagonal].all()
    assert not grid.occupied[distance > RADIUS + half_diagonal].any()
    assert 0.0 < grid.occupied_fraction < 0.1
    state = grid.state_dict()
    assert set(state) == {"aabb", "density", "occupied"}
    fresh = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), grid.resolution)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.occupied, grid.occupied)


def test_marcher_samples_only_the_sphere_and_renders_its_opacity():
    grid = _sphere_grid()
    g = torch.Generator().manual_seed(1)
    n = 120
    targets = (torch.rand(n, 3, generator=g) - 0.5) * 1.4  # some rays miss the sphere
    origins = torch.tensor([0.3, -0.2, 3.0]).expand(n, 3).contiguous()
    directions = targets - origins
    directions = directions / directions.norm(dim=-1, keepdim=True)
    ray_indices, t_starts, t_ends = grid.march(origins, directions, near=0.1, far=10.0,
                                               stratified=True, generator=g)  # fmt: skip
    assert ray_indices.numel() > 0
    assert (ray_indices[1:] >= ray_indices[:-1]).all()
    same_ray = ray_indices[1:] == ray_indices[:-1]
    assert (t_starts[1:][same_ray] >= t_ends[:-1][same_ray] - 1e-6).all()
    assert ((t_ends - t_starts) <= grid.step_size + 1e-6).all() and (t_ends > t_starts).all()
    points = packed_positions(origins, directions, ray_indices, t_starts, t_ends)
    assert (points.norm(dim=-1) < RADIUS + 2 * math.sqrt(3.0) / grid.resolution).all()
    # Rendered opacity against the analytic 1 - exp(-sigma * chord).
    sigmas = _sphere_density(points)
    out = composite_packed(ray_indices, sigmas, torch.ones(len(sigmas), 3), t_starts, t_ends, n)
    b = (origins * directions).sum(-1)
    disc = (b * b - (origins.norm(dim=-1) ** 2 - RADIUS**2)).clamp_min(0)
    chord = 2.0 * disc.sqrt()
    expected = 1.0 - torch.exp(-50.0 * chord)
    assert (out.opacity - expected).abs().max() < 0.05
    assert out.opacity[chord == 0].eq(0).all()
    # Deterministic marching (evaluation) gives the same count with and without chunking.
    a = grid.march(origins, directions)
    b = grid.march(origins, directions, max_candidates=15000)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_marcher_with_nothing_occupied():
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), 16)
    grid.update(lambda p: torch.zeros(p.shape[0], 1))
    assert grid.occupied.all()  # no density anywhere: nothing is culled (training could never recover)
    grid.occupied.zero_()
    origins = torch.tensor([[0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    ray_indices, t_starts, t_ends = grid.march(origins, directions)
    assert ray_indices.numel() == 0 and t_starts.numel() == 0 and ray_indices.dtype == torch.long
    empty = torch.empty(0)
    out = composite_packed(ray_indices, empty, torch.empty(0, 3), t_starts, t_ends, 2,
                           background=(1.0, 1.0, 1.0))  # fmt: skip
    torch.testing.assert_close(out.rgb, torch.ones(2, 3))


def test_before_any_update_everything_is_occupied():
    grid = OccupancyGrid(torch.tensor([[-1.5] * 3, [1.5] * 3]), 8)
    assert grid.occupied.all()
    assert abs(grid.step_size - 3.0 * math.sqrt(3.0) / 1024) < 1e-9
    ray_indices, t_starts, t_ends = grid.march(torch.tensor([[0.0, 0.0, 4.0]]),
                                               torch.tensor([[0.0, 0.0, -1.0]]))  # fmt: skip
    assert t_starts[0].item() == pytest.approx(2.5) and t_ends[-1].item() == pytest.approx(5.5)
    np.testing.assert_allclose((t_ends - t_starts).sum().item(), 3.0, rtol=1e-5)
