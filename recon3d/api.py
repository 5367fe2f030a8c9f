"""The Python API: fit a field, evaluate it at points, mesh it, save and load it.

    import recon3d

    model = recon3d.fit_sdf("scan.ply", steps=300, device="cpu")   # or an (N, 3) / (N, 6) array
    distances = model.sdf(points)                                    # (N,) in the scan's units
    mesh = model.mesh(resolution=128)                                # a recon3d.Mesh (TriMesh)
    mesh.save("scan.obj"); mesh.to_trimesh(); mesh.to_open3d()
    model.save("scan.sdf.pt")
    model = recon3d.load("scan.sdf.pt")

The functions run the same methods as the command line (recon3d.fit.registry: the input decides, so a
scene folder given to :func:`fit_sdf` fits NeuS) and give the same checkpoints for the same input and
seed. Nothing is written unless asked (:meth:`Model.save`). Devices are ``"auto"``, ``"cpu"``,
``"cuda"``, ``"cuda:1"`` or a ``torch.device``. Messages go through :mod:`logging` (the ``recon3d``
logger; ``logging.basicConfig(level=logging.INFO)`` shows progress lines); progress bars show on a
terminal unless ``progress=False``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon3d.console import warn
from recon3d.device import resolve_device, use_threads
from recon3d.errors import Recon3dError
from recon3d.types import PointCloud, TriMesh

#: The mesh type the API returns (vertices, faces, normals, colours; ``save``, ``to_trimesh``, ``to_open3d``).
Mesh = TriMesh

PathLike = str | os.PathLike


class Model:
    """A fitted field: what a checkpoint holds, ready to evaluate, mesh and save.

    ``kind`` is ``sdf``, ``occupancy`` or ``nerf``; ``checkpoint`` the plain-data checkpoint;
    ``history`` the training record's loss history (rows of step, loss, other terms; ``history_terms``
    names the columns). Evaluate with :meth:`values` (or the kind's own name: :meth:`sdf`,
    :meth:`occupancy`, :meth:`density`), mesh with :meth:`mesh`, write with :meth:`save`.
    """

    def __init__(self, checkpoint: dict[str, Any], device: str | torch.device = "auto", source: str | None = None):
        self.checkpoint = checkpoint
        self.device = resolve_device(device)
        self.source = source
        self._field: torch.nn.Module | None = None

    # ------------------------------------------------------------------ what it is

    @property
    def kind(self) -> str:
        return str(self.checkpoint["kind"])

    @property
    def method(self) -> str | None:
        """The method that fitted it (``fit-sdf``, ``fit-sdf-images``, …)."""
        return self.checkpoint["train"].get("method")

    @property
    def history(self) -> list[list[float]]:
        return list(self.checkpoint["train"].get("history") or [])

    @property
    def history_terms(self) -> list[str]:
        return list(self.checkpoint["train"].get("history_terms") or [])

    @property
    def quantity(self) -> str:
        """What :meth:`values` returns: ``signed distance``, ``occupancy`` or ``density``."""
        return str(getattr(self.field, "quantity", "field value"))

    def info(self) -> dict[str, Any]:
        """What ``recon3d info`` shows: kind, level, field, units, training record."""
        from recon3d.fit.describe import describe_checkpoint

        return describe_checkpoint(self.checkpoint)

    def __repr__(self) -> str:
        train = self.checkpoint["train"]
        return (f"Model(kind={self.kind!r}, method={self.method!r}, steps={train.get('steps')}, "
                f"device={str(self.device)!r}" + (f", source={self.source!r}" if self.source else "") + ")")

    # ------------------------------------------------------------------ the field

    @property
    def field(self) -> torch.nn.Module:
        """The trained network on :attr:`device`, in eval mode (built on first use)."""
        if self._field is None:
            from recon3d.mesh.from_field import load_field

            self._field = load_field(self.checkpoint, self.device)
        return self._field

    def to(self, device: str | torch.device) -> Model:
        """This model on another device (the field moves with it)."""
        self.device = resolve_device(device)
        if self._field is not None:
            self._field = self._field.to(self.device)
        return self

    def values(self, points: Any, chunk: int = 1 << 18) -> np.ndarray:
        """(N,) float64 field values at (N, 3) points in the input's units (its own placement):
        signed distances in the input's units for ``sdf`` (negative inside), the probability of being inside
        for ``occupancy``, the density σ per input unit for ``nerf``. ``chunk`` points per evaluation."""
        array = np.asarray(points, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 3:
            raise Recon3dError(f"points must be an (N, 3) array, got shape {array.shape}")
        to_world = self.checkpoint["to_world"]
        scale = float(to_world["scale"])
        local = (array - np.asarray(to_world["translation"], dtype=np.float64)) / scale
        field = self.field
        function = field.surface().function
        out = np.empty(len(local), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(local), max(1, int(chunk))):
                x = torch.as_tensor(local[start:start + chunk], dtype=torch.float32, device=self.device)
                raw = function(x).reshape(-1).float()
                out[start:start + len(x)] = field.world_values(raw, scale).double().cpu().numpy()
        return out

    def _kind_values(self, kind: str, name: str, points: Any) -> np.ndarray:
        if self.kind != kind:
            raise Recon3dError(f"model.{name}() needs a model of kind {kind}; this one is {self.kind}: use "
                               f"model.values() ({self.quantity})")
        return self.values(points)

    def sdf(self, points: Any) -> np.ndarray:
        """(N,) signed distances at (N, 3) points, in the input's units, negative inside (``sdf`` models)."""
        return self._kind_values("sdf", "sdf", points)

    def occupancy(self, points: Any) -> np.ndarray:
        """(N,) probabilities that (N, 3) points lie inside (``occupancy`` models)."""
        return self._kind_values("occupancy", "occupancy", points)

    def density(self, points: Any) -> np.ndarray:
        """(N,) densities σ per input unit at (N, 3) points (``nerf`` models)."""
        return self._kind_values("nerf", "density", points)

    # ------------------------------------------------------------------ meshes and files

    def mesh(self, resolution: int | None = None, level: float | None = None, faces: int | None = None,
             progress: bool = True, **options: Any) -> TriMesh:
        """A closed mesh of the surface in the input's units, as ``extract-mesh`` makes it.

        ``resolution``: cells along the longest side (default 512 on a GPU, 256 on a CPU); ``level``: the
        checkpoint's own unless given (a probability for occupancy); ``faces``: at most this many faces
        (quadric decimation, needs Open3D). Other keywords are :class:`recon3d.mesh.from_field.MeshOptions`
        fields (``method``, ``refine``, ``normals``, ``largest_component``, ``keep_unsupported``, ``chunk``).
        A field with no surface at the level is one Recon3dError saying its range.
        """
        mesh, _ = self.extract(resolution=resolution, level=level, faces=faces, progress=progress, **options)
        return mesh

    def extract(self, progress: bool = True, **options: Any) -> tuple[TriMesh, dict[str, Any]]:
        """(mesh, statistics) of :meth:`mesh`: faces, resolution, level, the field's range, seconds, warnings."""
        from recon3d.mesh.from_field import MeshOptions, check_empty, mesh_from_checkpoint

        known = set(MeshOptions.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise Recon3dError(f"model.mesh(): unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
        mesh_options = MeshOptions(**options)
        if mesh_options.method == "mise":
            mesh_options.method = "sparse"
        reporter = extraction_progress(enabled=progress)
        with reporter as report:
            mesh, stats = mesh_from_checkpoint(self.checkpoint, mesh_options, self.device, progress=report,
                                               field=self.field)
            check_empty(mesh, stats, self.checkpoint, self.source or "model")
        return mesh, stats

    def save(self, path: PathLike, force: bool = False) -> Path:
        """Write the checkpoint to ``path`` (a ``.pt`` file) atomically. A checkpoint of another method at
        ``path`` is not replaced unless ``force``."""
        from recon3d.fit.registry import method_of
        from recon3d.fit.run import check_replace
        from recon3d.io.atomic import check_output, output_lock
        from recon3d.io.checkpoint import save_checkpoint

        path = Path(path)
        check_output(path, suffixes=(".pt",), example="model.pt", what="checkpoint")
        with output_lock(path):
            method = method_of(self.checkpoint)
            if method is not None and not force:
                try:
                    check_replace(path, method)
                except Recon3dError as exc:
                    raise Recon3dError(str(exc).replace("give another -o, or --force to replace it",
                                                        "save it elsewhere, or save(path, force=True)")) from None
            save_checkpoint(path, self.checkpoint)
        return path


def extraction_progress(label: str = "extract-mesh", enabled: bool = True):
    """A context manager yielding ``progress(stage, fraction)`` for recon3d.mesh.extract: one percentage
    across the stages (evaluating the field, marching cubes, normals), the stage's name beside it."""
    import contextlib

    from recon3d.console import Progress

    weights = {"evaluate": (0.0, 0.8), "marching_cubes": (0.8, 0.05), "normals": (0.85, 0.15)}
    names = {"evaluate": "evaluating the field", "marching_cubes": "marching cubes", "normals": "normals"}

    @contextlib.contextmanager
    def reporter():
        with Progress(label, 1.0, percent=True, enabled=enabled) as bar:
            def report(stage: str, fraction: float) -> None:
                start, width = weights.get(stage, (0.0, 1.0))
                bar.update(start + width * min(max(float(fraction), 0.0), 1.0), stage=names.get(stage, stage))

            yield report
            bar.update(1.0, stage="")

    return reporter()


def load(path: PathLike, device: str | torch.device = "auto") -> Model:
    """A checkpoint written by a fit (or :meth:`Model.save`), checked and loaded without running code."""
    from recon3d.io.checkpoint import load_checkpoint

    return Model(load_checkpoint(path), device, source=str(path))


# ---------------------------------------------------------------------------------------------- fitting


def _fit(command: str, data: Any, *, device: str | torch.device, progress: bool, threads: int | None,
         **values: Any) -> Model:
    """Run ``command``'s method on ``data`` (a path, or what the method reads) and return the model."""
    from recon3d.fit.registry import get_method, method_for
    from recon3d.fit.run import make_options, read_input, train

    torch_device = resolve_device(device)
    with use_threads(threads) if threads is not None else _nothing():
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            if not path.exists():
                raise Recon3dError(f"{path}: no such file or folder")
            method = method_for(command, path)
            options = make_options(method, **values)
            data, source = read_input(method, path, options, torch_device, show_progress=progress), str(path)
        else:
            name, data, source = _in_memory(command, data)
            method = get_method(name)
            options = make_options(method, **values)
        checkpoint, run = train(method, data, options, torch_device, source=source, show_progress=progress)
    model = Model(checkpoint, torch_device, source=source)
    model._field = run.field
    if run.state is not None and run.state.interrupted:
        warn(f"{command}: interrupted at step {run.state.step}; the model is partial (model.save() writes a "
             "checkpoint that the command line can --resume)")
    return model


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def _in_memory(command: str, data: Any) -> tuple[str, Any, str]:
    """(method name, the data as the method reads it, a source name) for data given as Python objects."""
    from recon3d.io.labelled import LabelledPoints
    from recon3d.io.pointcloud import point_cloud_from_arrays

    if command == "fit-sdf":
        if isinstance(data, PointCloud):
            return "fit-sdf", point_cloud_from_arrays(data.points, data.normals, "points"), "points"
        return "fit-sdf", point_cloud_from_arrays(data, source="points"), "points"
    if command == "fit-occupancy":
        if isinstance(data, (TriMesh, LabelledPoints)):
            return "fit-occupancy", data, "mesh" if isinstance(data, TriMesh) else "points"
        if hasattr(data, "vertices") and hasattr(data, "faces"):  # a trimesh.Trimesh or alike
            return "fit-occupancy", TriMesh.from_trimesh(data), "mesh"
        raise Recon3dError("fit_occupancy() takes a path, a recon3d.Mesh (TriMesh), a trimesh.Trimesh or "
                           "LabelledPoints")
    if hasattr(data, "c2w") and hasattr(data, "pixels"):  # a recon3d.io.scene.Scene
        return "fit-nerf", data, str(getattr(data, "source", "scene"))
    raise Recon3dError("fit_nerf() takes a scene folder or transforms json (or a recon3d.io.scene.Scene)")


def fit_sdf(points_or_path: Any, *, steps: int | None = None, max_seconds: float | None = None,
            preset: str = "fast", device: str | torch.device = "auto", seed: int = 0, progress: bool = True,
            threads: int | None = None, **options: Any) -> Model:
    """Fit a signed distance field, as ``recon3d fit-sdf`` does, and return the :class:`Model`.

    ``points_or_path``: a point-cloud file, an (N, 3) or (N, 6) array (points, or points and normals), a
    ``PointCloud``, or a scene of posed images (a folder or transforms json: NeuS). ``steps`` and
    ``max_seconds`` are budgets (None: the preset's for the device); ``options`` are the command's other
    options by their Python names (``batch``, ``lr``, ``amp``, ``normals``, ``denoise``, ``outliers``,
    ``encoding``; for scenes ``downscale``, ``background``, ``box``, ``triangulate``). ``threads``: CPU threads
    while fitting (None: as torch has them).
    """
    return _fit("fit-sdf", points_or_path, device=device, progress=progress, threads=threads, steps=steps,
                max_seconds=max_seconds, preset=preset, seed=seed, **options)


def fit_occupancy(mesh_or_path: Any, *, steps: int | None = None, max_seconds: float | None = None,
                  preset: str = "fast", device: str | torch.device = "auto", seed: int = 0, progress: bool = True,
                  threads: int | None = None, **options: Any) -> Model:
    """Fit an occupancy field, as ``recon3d fit-occupancy`` does: to a mesh file or a ``points.npz``, a
    recon3d Mesh or ``trimesh.Trimesh``, ``LabelledPoints``, or a scene of posed images (UNISURF; ``preset=
    "dvr"``: DVR). See :func:`fit_sdf` for the other arguments."""
    return _fit("fit-occupancy", mesh_or_path, device=device, progress=progress, threads=threads, steps=steps,
                max_seconds=max_seconds, preset=preset, seed=seed, **options)


def fit_nerf(scene: Any, *, steps: int | None = None, max_seconds: float | None = None, preset: str = "fast",
             device: str | torch.device = "auto", seed: int = 0, progress: bool = True, threads: int | None = None,
             **options: Any) -> Model:
    """Fit a radiance field to a scene's ``train`` split, as ``recon3d fit-nerf`` does: a folder or a
    transforms json. :meth:`Model.density` evaluates it; :meth:`Model.mesh` meshes its density level."""
    return _fit("fit-nerf", scene, device=device, progress=progress, threads=threads, steps=steps,
                max_seconds=max_seconds, preset=preset, seed=seed, **options)


__all__ = ["Mesh", "Model", "fit_nerf", "fit_occupancy", "fit_sdf", "load"]
