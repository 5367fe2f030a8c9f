"""Rendering: cameras to rays, samplers, compositing.

The pieces of a radiance-field renderer, each a small functional module (nerfstudio's
field / sampler / renderer split, nerfacc's packed-sample API), device-agnostic torch:

* :mod:`recon3d.render.rays`: :class:`Rays`, :func:`camera_rays` (OpenGL cameras, pixel centres at
  +0.5, OpenCV distortion undone), :class:`RaySampler` (random training rays and their colours),
  :func:`ray_aabb`.
* :mod:`recon3d.render.samplers`: padded stratified and hierarchical (inverse-CDF) samples, and the
  :class:`OccupancyGrid` whose marcher emits packed samples in occupied space only.
* :mod:`recon3d.render.compositing`: volume rendering of padded (R, S) or packed (M,) samples.
"""

from recon3d.render.compositing import (
    Composite,
    accumulate_packed,
    composite,
    composite_packed,
    render_weights,
    render_weights_packed,
)
from recon3d.render.rays import (
    RayBatch,
    Rays,
    RaySampler,
    camera_rays,
    distort,
    image_rays,
    ray_aabb,
    undistort,
)
from recon3d.render.samplers import (
    OccupancyGrid,
    importance_samples,
    packed_positions,
    sample_pdf,
    samples_to_intervals,
    stratified_samples,
)

__all__ = [
    "Composite", "accumulate_packed", "composite", "composite_packed", "render_weights",
    "render_weights_packed", "RayBatch", "Rays", "RaySampler", "camera_rays", "distort",
    "image_rays", "ray_aabb", "undistort", "OccupancyGrid", "importance_samples",
    "packed_positions", "sample_pdf", "samples_to_intervals", "stratified_samples",
]  # fmt: skip
