"""The region a field is fitted in (recon3d.fit.region.fitting_box): --box, then a stated box."""

from __future__ import annotations

from types import SimpleNamespace

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
