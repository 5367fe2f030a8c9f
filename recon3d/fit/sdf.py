"""fit-sdf: a signed distance field from a raw point cloud (IGR, Gropp et al. 2020).

Loss on a batch of B scan points p (with normals n when known) and samples q around them:

    L = w_s · mean |f(p)|                                  surface: the points lie on f = 0
      + w_n · mean (1 − cos(∇f(p), n))                     normals from the file, or estimated ones
                                                           (PCA + MST orientation) for the first half
        then w_n · mean (1 − |cos(∇f(p), n)|)              estimated normals: tangent plane only
      + w_e · mean (‖∇f(q)‖ − 1)²                          eikonal: f is a distance
      + w_far · mean relu(d(u) − slack − |f(u)|)           no stray surface far from the scan; where
                                                           the scan vouches for the side c(u) = ±1,
                                                           c(u)·f(u) replaces |f(u)| (sign_claims)
      + w_far · mean relu(d_box(u) − f(u)), d_box(u) > 0   outside the scan's box is outside
      + w_o · mean exp(−α |f(u)|)                          optional: no stray surface far away (SIREN)

q mixes points near the surface (p + σ_p · N(0, I), σ_p the local point spacing, as IGR) and
points uniform in the domain. Presets pick the field and the budget: ``fast`` (multiresolution
hash grid + small MLP, the default), ``paper`` (IGR's 8×512 softplus MLP with a skip and geometric
init), ``siren`` (sine MLP with SIREN init), ``fourier`` (Fourier features + softplus MLP).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon3d.console import info
from recon3d.errors import Recon3dError
from recon3d.fields.encodings import HASHGRID, hashgrid_config
from recon3d.fields.implicit import gradient
from recon3d.fit import losses
from recon3d.fit.captured import CapturedUpdates, eager_update, fixed_step_mode
from recon3d.fit.loop import StepFn
from recon3d.fit.method import FitOptions, FitRun, Method
from recon3d.fit.presets import check_choice, choose_preset, make_batch, make_settings, pick
from recon3d.fit.run import fit
from recon3d.io.pointcloud import read_point_cloud
from recon3d.memory import check_memory, field_point_bytes
from recon3d.points.distance import distance_grid, free_space_threshold
from recon3d.points.normalize import data_bounds
from recon3d.points.scan import DENOISE_MODES, NORMAL_MODES, OUTLIER_MODES, clean_scan
from recon3d.points.support import scan_support
from recon3d.types import PointCloud

_SMALL_MLP = {"hidden": 64, "n_layers": 2, "activation": "softplus", "softplus_beta": 100.0,
              "init": "geometric", "init_radius": 0.5}

#: Each preset: field config, loss weights and per-device budgets (steps, batch of scan points, lr).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {
        "field": {"cuda": {"encoding": HASHGRID["cuda"], "mlp": _SMALL_MLP},
                  "cpu": {"encoding": HASHGRID["cpu"], "mlp": _SMALL_MLP}},
        # "normal_file": the normal term's weight when the normals come from the file (measured, not
        # guessed, so they may weigh more than estimated ones).
        "loss": {"surface": 1.0, "normal": 1.0, "normal_file": 2.0, "eikonal": 0.1, "far": 1.0, "offsurface": 0.0},
        "budget": {"cuda": {"steps": 1000, "batch": 32768, "lr": 1e-2},
                   "cpu": {"steps": 1500, "batch": 4096, "lr": 1e-2}},
        "anneal": 0.0,
    },
    "paper": {
        "field": {"any": {"encoding": {"type": "none"},
                          "mlp": {"hidden": 512, "n_layers": 8, "activation": "softplus", "softplus_beta": 100.0,
                                  "skip_layers": [4], "init": "geometric", "init_radius": 0.5}}},
        "loss": {"surface": 1.0, "normal": 1.0, "eikonal": 0.1, "offsurface": 0.0},
        "budget": {"cuda": {"steps": 10000, "batch": 16384, "lr": 5e-3},
                   "cpu": {"steps": 2000, "batch": 2048, "lr": 5e-3}},
        "anneal": 0.0,
    },
    "siren": {
        "field": {"any": {"encoding": {"type": "none"},
                          "mlp": {"hidden": 256, "n_layers": 3, "activation": "sine", "init": "siren",
                                  "w0": 30.0, "first_w0": 30.0}}},
        "loss": {"surface": 3000.0, "normal": 100.0, "eikonal": 50.0, "offsurface": 100.0},
        "budget": {"cuda": {"steps": 5000, "batch": 16384, "lr": 1e-4},
                   "cpu": {"steps": 1500, "batch": 2048, "lr": 1e-4}},
        "anneal": 0.0,
    },
    "fourier": {
        "field": {"any": {"encoding": {"type": "fourier", "n_features": 128, "sigma": 3.0},
                          "mlp": {"hidden": 256, "n_layers": 4, "activation": "softplus", "softplus_beta": 100.0,
                                  "init": "geometric", "init_radius": 0.5}}},
        "loss": {"surface": 1.0, "normal": 1.0, "eikonal": 0.1, "offsurface": 0.0},
        "budget": {"cuda": {"steps": 4000, "batch": 16384, "lr": 1e-3},
                   "cpu": {"steps": 1500, "batch": 2048, "lr": 1e-3}},
        "anneal": 0.0,
    },
}
#: Slack of the far-field prior (field units): away from the scan |f| must reach the distance to the
#: nearest point minus this. The penalty is soft, so holes wider than the slack still close; a small
#: slack keeps the surface across them near the scan.
FAR_SLACK = 0.005
#: With estimated normals, their signs are trusted for this fraction of the steps, then only the
#: tangent plane is (1 − |cos|), so local orientation mistakes cannot pin wrong geometry.
ORIENTED_FRACTION = 0.5
#: The sign claims of the far-field prior act for this fraction of the steps: once a trapped region
#: has flipped, |f| keeps it, and the patch across a hole may settle freely.
CLAIM_FRACTION = 0.5
#: On clean samples (noise ratio below CLEAN_NOISE, see recon3d.points.denoise) the learning rate
#: decays to CLEAN_LR_FINAL of its peak instead of the loop's 5 %: the last steps at 5 % leave the zero
#: set jittering by about one fine hash-grid cell between the points; on a real scan's noise the long
#: tail would fit the noise instead.
CLEAN_NOISE = 0.05
CLEAN_LR_FINAL = 0.005
#: Levels of the hash grid in use at the first step of a coarse-to-fine schedule (preset key "anneal").
ANNEAL_START_LEVELS = 4


@dataclass
class SDFOptions(FitOptions):
    """fit-sdf's options: the common ones, how to treat normals, noise and isolated points, and an
    encoding override."""

    normals: str = "auto"  # auto (the file's, else estimated), estimate, ignore
    encoding: str | None = None  # override the preset's encoding type
    denoise: str = "auto"  # smooth noisy points onto local fits: auto (when noisy), on, off
    outliers: str = "drop"  # isolated points (recon3d.points.outliers): drop, keep


@dataclass
class ScanData:
    """The scan in field coordinates, as tensors on the training device."""

    points: torch.Tensor  # (N, 3)
    normals: torch.Tensor | None  # (N, 3) oriented unit normals, or None
    origin: str  # "file" | "estimated" | "none"
    sigma: torch.Tensor  # (N,) std of the near-surface samples: the local point spacing
    distance_grid: torch.Tensor  # (1,1,G,G,G) unsigned distance to the scan over [-1,1]^3, [z,y,x]
    sign_claims: torch.Tensor  # (1,1,G,G,G) +1 outside, −1 inside, 0 unknown (recon3d.points.distance)
    data_box: torch.Tensor  # (2,3) the scan's bounding box, field coordinates
    to_world: dict
    bounds: np.ndarray
    support: dict[str, np.ndarray]  # voxel-thinned scan for extraction (recon3d.points.support)
    noise_ratio: float = 0.0  # see recon3d.points.denoise
    denoised: bool = False
    smoothing_passes: int = 0  # passes run when denoised (recon3d.points.denoise.smooth_until_quiet)
    outliers_dropped: int = 0  # isolated points left out (recon3d.points.outliers)
    duplicates_dropped: int = 0  # points collapsed onto an earlier one at the same coordinates


def resolve_preset(options: SDFOptions, device: torch.device) -> dict[str, Any]:
    """The run config for this device: field, loss weights, settings, batch, schedule and scan options."""
    preset = choose_preset(PRESETS, options.preset)
    check_choice("--normals", options.normals, NORMAL_MODES)
    check_choice("--denoise", options.denoise, DENOISE_MODES)
    check_choice("--outliers", options.outliers, OUTLIER_MODES)
    field = pick(preset["field"], device)
    if options.encoding is not None:
        field["encoding"] = _encoding_override(options.encoding, device)
    budget = pick(preset["budget"], device)
    settings = make_settings(budget, options.steps, options.max_seconds, options.lr, options.seed, options.amp)
    batch = make_batch(budget, options.batch)
    check_step_memory(field, batch, device)
    return {"field": field, "loss": dict(preset["loss"]), "settings": settings,
            "batch": batch, "anneal": preset["anneal"],
            "normals": options.normals, "denoise": options.denoise, "outliers": options.outliers}


def check_step_memory(field: dict, batch: int, device: torch.device) -> None:
    """Refuse a batch whose step cannot fit: B scan points, B near samples and B/4 uniform ones, each
    through the field and the backward pass through ∇ₓf (recon3d.memory.field_point_bytes)."""
    points = 2 * batch + max(batch // 4, 1)
    check_memory(points * field_point_bytes(field, "train2"), f"a fit-sdf step of --batch {batch}",
                 "use a smaller --batch", device)


def _encoding_override(name: str, device: torch.device) -> dict:
    options = {
        "hashgrid": hashgrid_config(device.type),
        "frequency": {"type": "frequency", "n_frequencies": 6},
        "fourier": {"type": "fourier", "n_features": 128, "sigma": 3.0},
        "none": {"type": "none"},
    }
    if name not in options:
        raise Recon3dError(f"--encoding {name}: choose {', '.join(options)}")
    return copy.deepcopy(options[name])


def prepare_scan(cloud: PointCloud, normals_mode: str, device: torch.device, source: str,
                 denoise: str = "auto", outliers: str = "drop", deadline: float | None = None) -> ScanData:
    """The scan cleaned (recon3d.points.scan), its distance priors, its support picture, on the device.

    ``deadline`` (time.monotonic()): preparation stages are not started past it (one clear error)."""
    scan = clean_scan(cloud, normals_mode, device, source, denoise, outliers, deadline)
    points, normals = scan.points, scan.normals
    sigma = np.clip(scan.spacing, 1e-4, 0.05)
    # Sign claims need oriented normals; with estimated ones, flood fill and the vote must agree anyway.
    grid, claims = distance_grid(points, normals=normals, tau=free_space_threshold(scan.spacing))
    if normals is not None:
        info(f"{source}: far from the scan, {np.mean(claims > 0):.0%} of the space is claimed outside, "
             f"{np.mean(claims < 0):.0%} inside")

    def as_tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device)

    return ScanData(
        points=as_tensor(points), normals=None if normals is None else as_tensor(normals),
        origin=scan.origin, sigma=as_tensor(sigma), distance_grid=as_tensor(grid)[None, None],
        sign_claims=as_tensor(claims.astype(np.float32))[None, None],
        data_box=as_tensor(np.stack([points.min(axis=0), points.max(axis=0)])), to_world=scan.to_world,
        bounds=data_bounds(points), support=scan_support(points, scan.spacing), noise_ratio=scan.noise_ratio,
        denoised=scan.denoised, smoothing_passes=scan.smoothing_passes, outliers_dropped=scan.outliers_dropped,
        duplicates_dropped=scan.duplicates_dropped,
    )


def sample_distance(grid: torch.Tensor, x: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Lookup of a lattice over [-1,1]^3 (1,1,G,G,G) at points x (N,3): trilinear, or ``mode="nearest"``."""
    coords = x.detach().float().view(1, -1, 1, 1, 3)
    return torch.nn.functional.grid_sample(grid, coords, mode=mode, align_corners=True).view(-1)


def box_distance(box: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Euclidean distance from points x (N,3) to the axis-aligned box (2,3); 0 inside it."""
    outside = torch.clamp(box[0] - x.detach(), min=0.0) + torch.clamp(x.detach() - box[1], min=0.0)
    return outside.norm(dim=-1)


def active_levels(step_index: int, total_steps: int, anneal: float, n_levels: int) -> int:
    """Hash-grid levels in use at this step: coarse to fine over the first ``anneal`` of the steps
    (Neuralangelo, Li et al. 2023), from ANNEAL_START_LEVELS to all of them; all when ``anneal`` is 0."""
    span = anneal * total_steps
    if span <= 0 or step_index >= span:
        return n_levels
    start = min(ANNEAL_START_LEVELS, n_levels)
    return start + int((n_levels - start + 1) * step_index / span)


class SdfStep:
    """IGR's loss on one batch: B scan points, B samples near them (IGR's local σ), B/4 uniform in [-1, 1]³.

    The random numbers are drawn first (:meth:`draw`) and the loss reads only them and the step's phase
    (:meth:`forward`), so :class:`CapturedSdfStep` can replay the loss as a CUDA graph.
    """

    def __init__(self, field: torch.nn.Module, scan: ScanData, weights: dict[str, float], batch: int,
                 total_steps: int, anneal: float = 0.0) -> None:
        self.field, self.scan, self.weights, self.batch = field, scan, weights, int(batch)
        self.total_steps, self.anneal = int(total_steps), float(anneal)
        self.grid = field.encoding if hasattr(field.encoding, "set_active_levels") else None
        self.trust_signs_until = total_steps if scan.origin == "file" else int(ORIENTED_FRACTION * total_steps)
        self.normal_weight = weights.get("normal_file", weights["normal"]) if scan.origin == "file" \
            else weights["normal"]
        self.claims_until = int(CLAIM_FRACTION * total_steps)
        self.n_uniform = max(self.batch // 4, 1)
        self.device = scan.points.device

    def draw(self, generator: torch.Generator,
             inputs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """This step's random numbers, written into ``inputs`` when given: scan point indices (B,), unit
        normal noise (B, 3), uniform points (B/4, 3)."""
        if inputs is None:
            inputs = {"index": torch.empty(self.batch, dtype=torch.int64, device=self.device),
                      "noise": torch.empty(self.batch, 3, device=self.device),
                      "uniform": torch.empty(self.n_uniform, 3, device=self.device)}
        inputs["index"].random_(0, self.scan.points.shape[0], generator=generator)
        inputs["noise"].normal_(generator=generator)
        inputs["uniform"].uniform_(-1.0, 1.0, generator=generator)
        return inputs

    def phase(self, step_index: int) -> tuple[bool, bool]:
        """(normal signs trusted, sign claims active) at this step; also sets the active hash-grid levels."""
        if self.grid is not None and self.anneal > 0:
            self.grid.set_active_levels(active_levels(step_index, self.total_steps, self.anneal, self.grid.n_levels))
        return step_index < self.trust_signs_until, step_index < self.claims_until

    def forward(self, inputs: dict[str, torch.Tensor], oriented: bool, claimed: bool) -> dict[str, torch.Tensor]:
        """The weighted loss and its terms; reads only ``inputs``, the scan and the field (no host sync)."""
        scan, weights, batch, idx = self.scan, self.weights, self.batch, inputs["index"]
        surface = scan.points[idx]
        near = surface + scan.sigma[idx, None] * inputs["noise"]
        x = torch.cat([surface, near, inputs["uniform"]])
        values, grad = gradient(self.field, x)
        values, grad = values.float(), grad.float()
        terms = {"surface": losses.surface_loss(values[:batch]), "eikonal": losses.eikonal_loss(grad[batch:])}
        loss = weights["surface"] * terms["surface"] + weights["eikonal"] * terms["eikonal"]
        if scan.normals is not None and self.normal_weight > 0:
            terms["normal"] = losses.normal_loss(grad[:batch], scan.normals[idx], oriented)
            loss = loss + self.normal_weight * terms["normal"]
        if weights.get("far", 0.0) > 0:
            far, u = values[2 * batch:], x[2 * batch:]
            claims = sample_distance(scan.sign_claims, u, mode="nearest") if claimed else torch.zeros_like(far)
            terms["far"] = losses.far_field_loss(far, sample_distance(scan.distance_grid, u), claims,
                                                 box_distance(scan.data_box, u), FAR_SLACK)
            loss = loss + weights["far"] * terms["far"]
        if weights["offsurface"] > 0:
            terms["offsurface"] = losses.offsurface_loss(values[2 * batch:])
            loss = loss + weights["offsurface"] * terms["offsurface"]
        terms["loss"] = loss
        return terms

    def __call__(self, step_index: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        phase = self.phase(step_index)
        return self.forward(self.draw(generator), *phase)


class CapturedSdfStep(SdfStep):
    """:class:`SdfStep` that runs its whole update (``update``) from fixed input buffers, replayed as one
    CUDA graph per phase (recon3d.fit.captured): a fit-sdf step launches a few hundred small kernels, so
    eagerly the host, not the GPU, sets its pace. ``capture=False`` runs the same update eagerly (tests)."""

    def __init__(self, *args: Any, capture: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capture = capture
        self.inputs: dict[str, torch.Tensor] | None = None
        self.captured: CapturedUpdates | None = None

    def update(self, step_index: int, generator: torch.Generator,
               optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
        """One training step: forward, backward and ``optimizer.step()``."""
        phase = self.phase(step_index)
        self.inputs = inputs = self.draw(generator, self.inputs)
        if self.capture:
            if self.captured is None:
                self.captured = CapturedUpdates(optimizer)
            if phase not in self.captured.graphs:  # phases only move forward: free the last one's memory first
                self.captured.graphs.clear()
            return dict(self.captured.run(phase, lambda: self.forward(inputs, *phase)))
        return eager_update(optimizer, lambda: self.forward(inputs, *phase))


def make_step(field: torch.nn.Module, scan: ScanData, weights: dict[str, float], batch: int,
              total_steps: int, anneal: float = 0.0, mode: str | None = None) -> SdfStep:
    """The per-step loss; ``mode`` (recon3d.fit.captured.fixed_step_mode): "capture" replays it as a CUDA
    graph, "eager" runs that fixed-buffer update without capturing, None the plain step."""
    if mode is None:
        return SdfStep(field, scan, weights, batch, total_steps, anneal)
    return CapturedSdfStep(field, scan, weights, batch, total_steps, anneal, capture=mode == "capture")


class SdfFromPoints(Method):
    """fit-sdf on a point cloud: IGR's losses on a hash-grid, MLP, SIREN or Fourier field."""

    name = command = "fit-sdf"
    kind = "sdf"
    options = SDFOptions
    records = ("points", "duplicates_dropped", "outliers_dropped", "normals", "noise_ratio", "denoised",
               "smoothing_passes")
    summary = ("points", "duplicates_dropped", "outliers_dropped", "normals", "denoised")

    def read(self, path: Path, options: FitOptions, device: torch.device) -> PointCloud:
        return read_point_cloud(path)

    def check_resume(self, checkpoint: dict, data: PointCloud, output: Path, path: Path) -> None:
        if checkpoint["train"]["points"] != len(data):
            raise Recon3dError(f"{output}: was fitted to {checkpoint['train']['points']} points, {path} has "
                               f"{len(data)}; resume needs the same scan")

    def configure(self, options: FitOptions, data: PointCloud, device: torch.device) -> dict[str, Any]:
        assert isinstance(options, SDFOptions)
        return resolve_preset(options, device)

    def prepare(self, run: FitRun, data: PointCloud) -> ScanData:
        config = run.config
        return prepare_scan(data, config["normals"], run.device, run.source, config["denoise"], config["outliers"],
                            preparation_deadline(run))

    def tune(self, run: FitRun) -> None:
        if run.data.noise_ratio < CLEAN_NOISE:
            run.config["settings"].lr_final_ratio = CLEAN_LR_FINAL

    def field_config(self, run: FitRun) -> dict[str, Any]:
        return {**run.config["field"], "level": 0.0, "inside": "below"}

    def make_step(self, run: FitRun) -> StepFn:
        config = run.config
        return make_step(run.field, run.data, config["loss"], config["batch"], config["settings"].steps,
                         config.get("anneal", 0.0), fixed_step_mode(run.device))

    def finish(self, run: FitRun) -> None:
        encoding = run.field.encoding
        if hasattr(encoding, "set_active_levels"):  # a budget may stop a coarse-to-fine schedule early
            encoding.set_active_levels(encoding.n_levels)

    def train_records(self, run: FitRun) -> dict[str, Any]:
        scan: ScanData = run.data
        # Points as read (--resume compares it); duplicates only when there were any.
        duplicates = {"duplicates_dropped": scan.duplicates_dropped} if scan.duplicates_dropped else {}
        return {
            "points": int(scan.points.shape[0]) + scan.outliers_dropped + scan.duplicates_dropped,
            **duplicates,
            "outliers_dropped": scan.outliers_dropped,
            "normals": scan.origin,
            "noise_ratio": round(scan.noise_ratio, 4),
            "denoised": scan.denoised,
            "smoothing_passes": scan.smoothing_passes,
        }

    def extras(self, run: FitRun) -> dict[str, Any]:
        return {"support": {key: torch.from_numpy(value) for key, value in run.data.support.items()}}


def preparation_deadline(run: FitRun) -> float | None:
    """When preparation must have ended: ``--max-seconds`` after it starts (time.monotonic()), or None."""
    seconds = run.config["settings"].max_seconds
    return None if seconds is None else time.monotonic() + float(seconds)


def fit_sdf(cloud: PointCloud, options: SDFOptions, output: str | Path, device: torch.device,
            source: str = "input", resume: dict | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Fit an SDF to ``cloud``, write the checkpoint to ``output``, return the summary (see fit())."""
    return fit(SdfFromPoints(), cloud, options, output, device, source, resume, show_progress)
