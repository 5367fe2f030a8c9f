"""Turning a new structure-from-motion model upright: its world frame is arbitrary, so ``recon3d poses``
rotates it until the cameras' mean up direction is +z, as instant-ngp's colmap2nerf and nerfstudio's
``auto_orient`` ("up") do. A hand-held capture then stands the way it was filmed: a table or the floor
is roughly horizontal, axis-aligned boxes (the region of interest) fit the object more closely, and
pictures that assume z up show it upright.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon3d.io.colmap import ColmapModel, ColmapPoints, qvec_to_rotation, rotation_to_qvec


def upright_rotation(world_to_camera: np.ndarray) -> np.ndarray:
    """(3, 3) the rotation R (x' = R x) taking the mean up direction of cameras with world-to-camera
    rotations (N, 3, 3) (COLMAP's: OpenCV axes, y down) to +z, by the shortest arc; the identity when
    the cameras' up directions cancel out."""
    up = -np.asarray(world_to_camera, np.float64)[:, 1, :].mean(axis=0)  # row 1: the camera's y (down) in world
    length = float(np.linalg.norm(up))
    if length < 1e-6:
        return np.eye(3)
    up /= length
    z = np.array([0.0, 0.0, 1.0])
    axis = np.cross(up, z)
    sine, cosine = float(np.linalg.norm(axis)), float(up @ z)
    if sine < 1e-9:
        return np.eye(3) if cosine > 0 else np.diag([1.0, -1.0, -1.0])  # already up, or upside down
    k = axis / sine
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + sine * cross + (1.0 - cosine) * cross @ cross  # Rodrigues


def rotate_model(model: ColmapModel, rotation: np.ndarray) -> ColmapModel:
    """The model in the world frame x' = R x: points rotated, each camera's world-to-camera rotation
    R_wc R^T (its translation and the 2D observations unchanged)."""
    rotation = np.asarray(rotation, np.float64)
    images = {image_id: dataclasses.replace(image, qvec=rotation_to_qvec(qvec_to_rotation(image.qvec) @ rotation.T))
              for image_id, image in model.images.items()}
    points: ColmapPoints = dataclasses.replace(model.points, xyz=model.points.xyz @ rotation.T)
    return dataclasses.replace(model, images=images, points=points)


def upright_model(model: ColmapModel) -> tuple[ColmapModel, np.ndarray]:
    """(the model turned so its cameras' mean up is +z, the rotation applied (3, 3))."""
    if not model.images:
        return model, np.eye(3)
    rotation = upright_rotation(np.stack([qvec_to_rotation(image.qvec) for image in model.images.values()]))
    return rotate_model(model, rotation), rotation
