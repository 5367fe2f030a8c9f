"""The region a field is fitted in (recon3d.fit.region.fitting_box, fitting_region): --box, then a stated box;
sparse points and their support plane."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from recon3d.fit.region import fitting_box


def _scene(source: str) -> SimpleNamespace:
    # Cameras on a circle looking at the origin: their focus cube would be about the origin.
    angles = torch.linspace(0, 6.0, 12)
    c2w = torch.zeros(12, 4, 4)
    for i, a in enumerate(angles):
        eye = torch.tensor([4 * torch.cos(a), 4 * torch.sin(a), 0.0])
        back = eye / eye.norm()
        right = torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), back)
        c2w[i, :3, 0], c2w[i, :3, 1], c2w[i, :3, 2], c2w[i, :3, 3] = right, torch.linalg.cross(back, right), back, eye
        c2w[i, 3, 3] = 1.0
    ones = torch.ones(12)
    return SimpleNamespace(alphas=None, stored_alphas=lambda: None,
                           aabb=torch.tensor([[-0.5, 0.0, -0.2], [1.5, 1.0, 0.3]]), aabb_source=source,
                           c2w=c2w, fx=100 * ones, fy=100 * ones, cx=50 * ones, cy=50 * ones)


def test_a_stated_box_is_the_region_and_box_overrides_it():
    box, hull = fitting_box(_scene("aabb"), None)
    assert hull is None and torch.equal(box, torch.tensor([[-0.5, 0.0, -0.2], [1.5, 1.0, 0.3]]))
    assert torch.equal(fitting_box(_scene("points"), None)[0], box)
    given = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    assert torch.equal(fitting_box(_scene("aabb"), given)[0], torch.tensor([given[:3], given[3:]]))


def test_without_a_stated_box_the_cameras_focus_decides():
    box, _ = fitting_box(_scene("cameras"), None)
    assert not torch.equal(box, _scene("cameras").aabb)
    assert bool((box[0] >= _scene("cameras").aabb[0] - 1e-6).all())  # clipped to the scene's box


def test_masks_are_found_without_a_float_copy_of_the_split(tmp_path, monkeypatch):
    """has_masks reads the stored alpha image by image: decoding a whole split to float took 49 bytes a
    pixel (13.6 GB for 250 frames of 1000², now 2.2 GB in all)."""
    from recon3d.fit.region import has_masks
    from recon3d.io.scene import Scene, read_scene
    from recon3d.synthetic import write_spheres_scene

    write_spheres_scene(tmp_path / "scene", n_train=3, n_val=1, size=16)
    scene = read_scene(tmp_path / "scene", "train", keep_alpha=True)
    decode = Scene.decode

    def one_image_at_most(self, stored):
        assert stored.dim() <= 3, "a whole split decoded at once"
        return decode(self, stored)

    monkeypatch.setattr(Scene, "decode", one_image_at_most)
    assert scene.stored_alphas() is not None and bool((scene.stored_alphas() < 255).any())
    assert has_masks(scene)
    scene.pixels[..., 3] = 255
    assert not has_masks(scene)


def _wall_scene(all_round: bool = False) -> SimpleNamespace:
    """Cameras on an arc in front of the wall x = 0 looking at a blob (the object) that hangs on it, as
    instant-ngp's fox does; sparse points on the wall (most of them) and on the blob. ``all_round``:
    cameras on both sides of the wall (an object seen from everywhere: no support plane)."""
    rng = np.random.default_rng(0)
    wall = np.stack([rng.normal(0.0, 0.002, 600), rng.uniform(-2, 2, 600), rng.uniform(-2, 2, 600)], 1)
    blob = rng.normal(0.0, 0.25, (300, 3)) + [0.5, 0.0, 0.0]
    angles = np.linspace(-1.0, 1.0, 12) + (np.pi * (np.arange(12) % 2) if all_round else 0.0)
    c2w = torch.zeros(12, 4, 4)
    for i, a in enumerate(angles):
        eye = torch.tensor([4 * np.cos(a), 4 * np.sin(a), 0.5], dtype=torch.float32)
        back = (eye - torch.tensor([0.3, 0.0, 0.0])) / (eye - torch.tensor([0.3, 0.0, 0.0])).norm()
        right = torch.nn.functional.normalize(torch.linalg.cross(torch.tensor([0.0, 0.0, 1.0]), back), dim=0)
        c2w[i, :3, 0], c2w[i, :3, 1], c2w[i, :3, 2], c2w[i, :3, 3] = right, torch.linalg.cross(back, right), back, eye
        c2w[i, 3, 3] = 1.0
    ones = torch.ones(12)
    return SimpleNamespace(alphas=None, stored_alphas=lambda: None, aabb=torch.tensor([[-6.0] * 3, [6.0] * 3]),
                           aabb_source="aabb_scale", sparse=SimpleNamespace(points=np.vstack([wall, blob])),
                           c2w=c2w, fx=100 * ones, fy=100 * ones, cx=50 * ones, cy=50 * ones)


def test_a_wall_the_object_hangs_on_ends_the_region():
    """Without masks, a capture of an object on a wall (or table) has a support plane: the region is the
    object's points in front of it, and ends at it, so the wall is the background's (fox: the wall and
    the unseen space behind it filled the fitting box)."""
    from recon3d.fit.region import fitting_region, support_plane

    scene = _wall_scene()
    region = fitting_region(scene, None)
    assert region.plane is not None
    normal, offset = region.plane[:3], region.plane[3]
    assert abs(abs(normal[0]) - 1.0) < 1e-3 and normal[0] > 0  # the wall, facing the cameras
    assert 0.0 < offset < 0.1  # just in front of it
    box = region.box.numpy()
    assert box[0, 0] > -0.3 and box[1, 0] > 0.8  # the blob, not the wall's 4 units of extent along x...
    assert box[1, 1] - box[0, 1] < 2.5  # ...nor along y
    # Cameras all round (both sides of the wall) or given --box: no support plane.
    assert support_plane(scene.sparse.points, _wall_scene(all_round=True).c2w[:, :3, 3].numpy()) is None
    assert fitting_region(scene, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]).plane is None


def test_a_stated_box_bounds_the_region_of_the_points_in_front_of_the_support():
    """A box the scene states (recon3d poses writes one round the points the cameras look at, wall
    included) only bounds the region: the region is the box of the object's points in front of the wall,
    inside it; a stated box that misses those points is the region as it is."""
    from recon3d.fit.region import fitting_region

    scene = _wall_scene()
    scene.aabb, scene.aabb_source = torch.tensor([[-0.3, -2.0, -2.0], [1.5, 2.0, 2.0]]), "aabb"
    box = fitting_region(scene, None).box.numpy()
    assert box[0, 0] > -0.3 and box[1, 1] - box[0, 1] < 2.5 and box[1, 2] - box[0, 2] < 2.5  # the blob's
    assert (box[0] >= scene.aabb[0].numpy()).all() and (box[1] <= scene.aabb[1].numpy()).all()
    scene.aabb = torch.tensor([[3.0, 3.0, 3.0], [4.0, 4.0, 4.0]])  # the user's box, away from every point
    assert np.allclose(fitting_region(scene, None).box.numpy(), scene.aabb.numpy())


def test_the_background_starts_at_the_support_plane():
    from recon3d.fit.images import plane_cells, plane_to_field
    from recon3d.render.background import box_exit, region_exit
    from recon3d.render.samplers import OccupancyGrid

    box = torch.tensor([[-1.0] * 3, [1.0] * 3])
    origins = torch.tensor([[3.0, 0.0, 0.0], [3.0, 0.0, 0.0], [-3.0, 0.0, 0.0]])
    directions = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    plane = torch.tensor([1.0, 0.0, 0.0, 0.25])  # the region is x >= 0.25
    exits = region_exit(origins, directions, box, plane)
    assert torch.allclose(exits[0], torch.tensor(2.75))  # stops at the plane, not the box's far side (4)
    assert torch.equal(exits[1:], box_exit(origins, directions, box)[1:])  # parallel, or from behind
    world = np.array([1.0, 0.0, 0.0, 2.0])
    field = plane_to_field(world, {"scale": 2.0, "translation": [1.0, 5.0, 0.0]})
    assert np.allclose(field, [1.0, 0.0, 0.0, 0.5])  # x = 2u + 1 = 2  <=>  u = 0.5
    grid = OccupancyGrid(box, 8)
    cells = plane_cells(plane.numpy(), grid)
    centres = grid.cell_centers()
    assert bool(cells[centres[:, 0] > 0.5].all()) and not bool(cells[centres[:, 0] < 0.0].any())


def test_points_beyond_the_region_keep_their_rays_clear_instead_of_pulling_a_surface():
    """Sparse points behind the support plane or outside the box are the background's: their
    observations leave DS-NeRF's depth term (which would pull a surface onto the region's edge) for the
    term that keeps their rays empty."""
    from recon3d.fit.depth import DepthRays
    from recon3d.fit.images import ImageData
    from recon3d.fit.neus import split_by_region

    points = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [5.0, 0.0, 0.0]])  # in, behind the plane, outside
    n = len(points)
    depth = DepthRays(image=torch.zeros(n, dtype=torch.int64), uv=torch.zeros(n, 2), depth=torch.ones(n),
                      sigma=torch.ones(n), c2w=torch.eye(4)[None], fx=torch.ones(1), fy=torch.ones(1),
                      cx=torch.ones(1), cy=torch.ones(1), distortion=None, points=points)
    data = ImageData(scene=None, rays=None, to_world={"scale": 1.0, "translation": [0.0, 0.0, 0.0]},
                     bounds=np.array([[-1.0] * 3, [1.0] * 3]), hull=None, masks=False,
                     plane=np.array([1.0, 0.0, 0.0, 0.0]))
    within, beyond = split_by_region(depth, data)
    assert torch.equal(within.points, points[:1]) and torch.equal(beyond.points, points[1:])
    data.plane = None
    within, beyond = split_by_region(depth, data)
    assert len(within) == 2 and torch.equal(beyond.points, points[2:])


def test_fit_sdf_ends_its_region_at_a_table_and_renders_with_it(tmp_path):
    """End to end on the CPU: a capture without masks whose sparse points lie mostly on a table (z = -0.7,
    below the spheres, every camera above it). fit-sdf records the plane, marches nothing behind it,
    keeps the rays of the table's points empty ("clear") and the checkpoint renders."""
    from dataclasses import replace

    from recon3d.fit.images import ImagesOptions
    from recon3d.fit.neus import SdfFromImages
    from recon3d.fit.run import fit
    from recon3d.io.checkpoint import load_checkpoint
    from recon3d.io.scene import read_scene
    from recon3d.render.model import load_renderer
    from recon3d.render.rays import image_rays
    from recon3d.synthetic import write_spheres_scene

    scene = read_scene(write_spheres_scene(tmp_path / "s", n_train=6, n_val=0, size=24), "train", keep_alpha=True)
    scene = replace(scene, pixels=scene.pixels.clone())
    scene.pixels[..., 3] = 255  # no masks
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.uniform(-1.5, 1.5, (300, 2)), np.full(300, -0.7)])
    on_sphere = rng.normal(size=(100, 3))
    points = np.vstack([table, 0.6 * on_sphere / np.linalg.norm(on_sphere, axis=1, keepdims=True)])
    obs = []
    for i in range(len(scene)):
        c2w = scene.c2w[i].double().numpy()
        for j, p in enumerate(points):
            local = (p - c2w[:3, 3]) @ c2w[:3, :3]
            obs.append((i, j, float(scene.cx[i]) + float(scene.fx[i]) * local[0] / -local[2],
                        float(scene.cy[i]) - float(scene.fy[i]) * local[1] / -local[2]))
    obs = np.array(obs)
    sparse = SimpleNamespace(points=points, obs_frame=obs[:, 0].astype(int), obs_point=obs[:, 1].astype(int),
                             obs_uv=obs[:, 2:].astype(np.float32), obs_error=np.full(len(obs), 0.5, np.float32))
    object.__setattr__(scene, "sparse", sparse)
    fit(SdfFromImages(), scene, ImagesOptions(steps=3), tmp_path / "m.pt", torch.device("cpu"), show_progress=False)
    checkpoint = load_checkpoint(tmp_path / "m.pt")
    plane = checkpoint["train"]["config"]["region_plane"]
    assert plane is not None and abs(abs(plane[2]) - 1.0) < 1e-3 and plane[2] > 0  # the table, facing up
    assert "clear" in checkpoint["train"]["history_terms"]
    renderer = load_renderer(checkpoint, torch.device("cpu"))
    assert renderer.plane is not None
    centres = renderer.grid.cell_centers()
    cell = float(((renderer.grid.aabb[1] - renderer.grid.aabb[0]) / renderer.grid.resolution).norm())
    behind = centres @ torch.tensor(plane[:3]) < plane[3] - 0.5 * cell  # cells wholly behind the plane
    assert bool(behind.any()) and not bool(renderer.grid.occupied[behind].any())
    with torch.no_grad():
        result = renderer.render(image_rays(scene, 0), torch.ones(3))
    assert bool(torch.isfinite(result.rgb).all())
