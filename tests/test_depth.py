"""Depth supervision (DS-NeRF): the loss against hand values, the rays through observed pixels, and a
fit-nerf run on a scene with sparse points."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from recon3d.fit.depth import depth_rays
from recon3d.fit.losses import depth_termination_loss
from recon3d.io.scene import read_scene
from recon3d.synthetic import write_spheres_scene

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_loss_is_the_cross_entropy_of_a_gaussian_at_the_depth():
    """One ray, weights on 100 intervals of [0, 10]: all weight in the interval holding the depth gives
    ≈ −log(1) over the Gaussian's mass there and −log(ε) elsewhere; moving the weight away raises it."""
    edges = torch.linspace(0.0, 10.0, 101)
    starts, ends = edges[:-1], edges[1:]
    rays = torch.zeros(100, dtype=torch.int64)
    depth, sigma = torch.tensor([4.05]), torch.tensor([0.02])
    at_depth = torch.zeros(100)
    at_depth[40] = 1.0  # the interval [4.0, 4.1]
    elsewhere = torch.zeros(100)
    elsewhere[70] = 1.0
    good = depth_termination_loss(at_depth, starts, ends, rays, depth, sigma, 1)
    bad = depth_termination_loss(elsewhere, starts, ends, rays, depth, sigma, 1)
    # The Gaussian's mass lies (almost) all in interval 40, where −log(1 + 1e-10) ≈ 0.
    assert float(good) == pytest.approx(0.0, abs=1e-3)
    assert float(bad) == pytest.approx(-math.log(1e-10), rel=1e-3)


def test_a_ray_whose_samples_miss_the_depth_is_not_pulled():
    """Samples only on [0, 3] (the occupancy grid skipped the rest) and a depth of 4.05: the Gaussian has no
    mass on them, so the ray adds nothing, instead of being pushed to stop at its last sample; a second ray
    that covers its depth is unaffected by the first."""
    edges = torch.linspace(0.0, 3.0, 31)
    starts, ends = edges[:-1], edges[1:]
    weights = torch.full((30,), 0.01, requires_grad=True)
    loss = depth_termination_loss(weights, starts, ends, torch.zeros(30, dtype=torch.int64), torch.tensor([4.05]),
                                  torch.tensor([0.02]), 1)
    loss.backward()
    assert float(loss.detach()) == 0.0 and float(weights.grad.abs().max()) == 0.0
    covered = torch.linspace(0.0, 10.0, 101)
    both_starts, both_ends = torch.cat([starts, covered[:-1]]), torch.cat([ends, covered[1:]])
    rays = torch.cat([torch.zeros(30, dtype=torch.int64), torch.ones(100, dtype=torch.int64)])
    elsewhere = torch.zeros(130)
    elsewhere[100] = 1.0  # the second ray stops at 7.0, far from its depth
    pair = depth_termination_loss(elsewhere, both_starts, both_ends, rays, torch.tensor([4.05, 4.05]),
                                  torch.tensor([0.02, 0.02]), 2)
    assert float(pair) == pytest.approx(-math.log(1e-10) / 2, rel=1e-3)


def test_rays_of_observations_pass_through_their_points(tmp_path):
    """A sparse point seen by every camera: the ray through its observed pixel passes the point, at the
    distance the loss takes as its depth."""
    scene = read_scene(write_spheres_scene(tmp_path, n_train=4, n_val=0, size=32), "train")
    point = np.array([0.2, -0.1, 0.3])
    uv, frames = [], []
    for i in range(len(scene)):
        c2w = scene.c2w[i].double().numpy()
        local = (point - c2w[:3, 3]) @ c2w[:3, :3]  # camera frame, looking down -z
        u = float(scene.cx[i]) + float(scene.fx[i]) * local[0] / -local[2]
        v = float(scene.cy[i]) - float(scene.fy[i]) * local[1] / -local[2]
        uv.append([u, v])
        frames.append(i)
    sparse = SimpleNamespace(points=point[None], obs_frame=np.array(frames), obs_point=np.zeros(len(frames), int),
                             obs_uv=np.array(uv, np.float32), obs_error=np.full(len(frames), 0.3, np.float32))
    rays = depth_rays(SimpleNamespace(**{k: getattr(scene, k) for k in ("c2w", "fx", "fy", "cx", "cy", "distortion")},
                                      sparse=sparse), torch.device("cpu"))
    assert rays is not None and len(rays) == len(scene)
    generator = torch.Generator().manual_seed(0)
    batch, depth, sigma = rays.sample(16, generator)
    hits = batch.origins + batch.directions * depth[:, None]
    torch.testing.assert_close(hits, torch.tensor(point, dtype=torch.float32).expand_as(hits), atol=1e-4, rtol=0)
    assert bool((sigma > 0).all())


def test_fit_nerf_uses_the_sparse_points(tmp_path):
    """A scene with sparse points trains the depth term; the same scene without them does not."""
    from recon3d.fit.nerf import NerfOptions, fit_nerf
    from recon3d.io.checkpoint import load_checkpoint

    folder = write_spheres_scene(tmp_path / "s", n_train=6, n_val=0, size=24)
    scene = read_scene(folder, "train", keep_alpha=True)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(40, 3))
    points = 0.6 * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # on the big sphere
    obs = []
    for i in range(len(scene)):
        c2w = scene.c2w[i].double().numpy()
        for j, p in enumerate(points):
            local = (p - c2w[:3, 3]) @ c2w[:3, :3]
            if local[2] < 0:
                obs.append((i, j, float(scene.cx[i]) + float(scene.fx[i]) * local[0] / -local[2],
                            float(scene.cy[i]) - float(scene.fy[i]) * local[1] / -local[2]))
    obs = np.array(obs)
    sparse = SimpleNamespace(points=points, obs_frame=obs[:, 0].astype(int), obs_point=obs[:, 1].astype(int),
                             obs_uv=obs[:, 2:].astype(np.float32), obs_error=np.full(len(obs), 0.5, np.float32))
    with_points = replace(scene) if not hasattr(scene, "sparse") else scene
    object.__setattr__(with_points, "sparse", sparse)
    summary = fit_nerf(with_points, NerfOptions(steps=4), tmp_path / "depth.pt", torch.device("cpu"),
                       show_progress=False)
    terms = load_checkpoint(tmp_path / "depth.pt")["train"]["history_terms"]
    assert "depth" in terms and np.isfinite(summary["loss"])
    from recon3d.fit.images import ImagesOptions
    from recon3d.fit.neus import SdfFromImages
    from recon3d.fit.run import fit

    summary = fit(SdfFromImages(), with_points, ImagesOptions(steps=4), tmp_path / "neus.pt", torch.device("cpu"),
                  show_progress=False)
    assert "depth" in load_checkpoint(tmp_path / "neus.pt")["train"]["history_terms"]
    assert np.isfinite(summary["loss"])
    plain = read_scene(folder, "train", keep_alpha=True)
    fit_nerf(plain, NerfOptions(steps=4), tmp_path / "plain.pt", torch.device("cpu"), show_progress=False)
    assert "depth" not in load_checkpoint(tmp_path / "plain.pt")["train"]["history_terms"]
    fit_nerf(with_points, NerfOptions(steps=4, depth=False), tmp_path / "off.pt", torch.device("cpu"),
             show_progress=False)  # fit-nerf --no-depth
    assert "depth" not in load_checkpoint(tmp_path / "off.pt")["train"]["history_terms"]


def test_no_depth_is_a_fit_nerf_option_and_only_that():
    from typer.testing import CliRunner

    from recon3d.cli import app

    assert "--no-depth" in CliRunner().invoke(app, ["fit-nerf", "--help"], terminal_width=200).output
    result = CliRunner().invoke(app, ["fit-nerf", "missing-scene", "--no-depth"])
    assert result.exit_code == 1 and "no such option" not in result.output.lower()
    other = CliRunner().invoke(app, ["fit-occupancy", "x", "--no-depth"])  # not an option there
    assert other.exit_code == 1 and "no such option" in other.output.lower()
