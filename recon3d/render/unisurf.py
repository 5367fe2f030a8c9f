"""UNISURF's samples along a ray and its renderer (Oechsle et al. 2021): occupancies are the samples'
opacities, taken in an interval [t_s − Δ, t_s + Δ] round the surface t_s plus some in the free space in
front of it. Training draws them stratified with Δ shrinking (recon3d.fit.unisurf); rendering a fitted
model takes bin centres with the final Δ, so a picture is rendered the way the model was trained last.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon3d.render.surface import SurfaceRenderer, find_surface


def interval_samples(t0: Tensor, t1: Tensor, t_surface: Tensor, hit: Tensor, delta: float, inside: Tensor,
                     outside: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(t, t_starts, t_ends), each (R, n_in + n_out) sorted, for rays that span [t0, t1] (R,) of the box.

    A ray that hits the surface at ``t_surface`` (``hit``) gets its ``inside`` fractions (R, n_in) in [0, 1)
    of [t_s − Δ, t_s + Δ] (clipped to the span) and its ``outside`` fractions (R, n_out) of the free space
    from t0 to that interval; a ray that misses spreads the ``inside`` ones over the whole span (and its
    ``outside`` ones collapse onto t0, zero-length). Each sample's interval runs between the midpoints to
    its neighbours, from t0 to t1.
    """
    lo = torch.where(hit, (t_surface - delta).clamp_min(t0), t0)
    hi = torch.where(hit, (t_surface + delta).clamp_max(t1), t1)
    before = torch.where(hit, lo, t0)
    t_in = lo[:, None] + (hi - lo)[:, None] * inside
    t_out = t0[:, None] + (before - t0)[:, None] * outside
    t = torch.sort(torch.cat([t_out, t_in], dim=1), dim=1).values
    halfway = 0.5 * (t[:, 1:] + t[:, :-1])
    return t, torch.cat([t0[:, None], halfway], dim=1), torch.cat([halfway, t1[:, None]], dim=1)


def bin_centres(n_rays: int, n: int, device: torch.device) -> Tensor:
    """(R, n) the centres of n equal bins of [0, 1), the same for every ray."""
    return ((torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n).expand(n_rays, n)


class UnisurfRenderer(SurfaceRenderer):
    """Renders an occupancy field fitted by UNISURF as it was trained at the end: the first crossing of
    o = 0.5 by secant search, ``inside`` samples in [t_s − Δ_min, t_s + Δ_min] and ``outside`` ones in
    front, α = o, alpha compositing over the background (the background field's, when the fit had one)."""

    def __init__(self, field: torch.nn.Module, to_world: dict, bounds: Tensor, sampling: dict) -> None:
        super().__init__(field, to_world, bounds, coarse=int(sampling["coarse"]))
        self.secant = int(sampling["secant"])
        self.delta = float(sampling["delta_min"])
        self.n_in, self.n_out = int(sampling["inside"]), int(sampling["outside"])

    def render(self, rays, background: Tensor):
        """(R,) rays → a :class:`recon3d.render.compositing.Composite` (depth in world units)."""
        from recon3d.render.compositing import Composite, composite_alphas

        origins, directions, t0, t1, box_hit = self.field_rays(rays)
        surface = self.field.surface()
        t_surface, hit = find_surface(surface.function, origins, directions, t0, t1, level=surface.level,
                                      inside=surface.inside, coarse=self.coarse, secant=self.secant)
        n_rays, device = len(origins), origins.device
        t, starts, ends = interval_samples(t0, t1, t_surface, hit, self.delta, bin_centres(n_rays, self.n_in, device),
                                           bin_centres(n_rays, self.n_out, device))
        points = origins[:, None, :] + directions[:, None, :] * t[..., None]
        logits, features, grad = self.field.geometry(points.reshape(-1, 3), create_graph=False)
        dirs = directions[:, None, :].expand_as(points).reshape(-1, 3)
        rgbs = self.field.appearance(features, self.field.outward(grad), dirs).reshape(*t.shape, 3)
        alphas = torch.sigmoid(logits).reshape(t.shape) * box_hit[:, None]
        result = composite_alphas(alphas, rgbs, starts, ends, self.background_of(origins, directions, background))
        return Composite(result.rgb, result.opacity, result.depth * self.scale, result.weights)
