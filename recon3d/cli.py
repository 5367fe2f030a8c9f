"""The recon3d command line: parse, validate, call the library, print.

stdout carries results only (written paths, or one JSON object with --json); progress, logs and
warnings go to stderr. Bad input ends with one ``error: …`` line and a non-zero exit code.

Interruption: Ctrl-C (SIGINT) and SIGTERM are treated alike, and exit with 130 either way. During
training (recon3d.fit.loop) the first one stops the run after the current step and a resumable
checkpoint is written; anywhere else (reading inputs, writing outputs) SIGTERM raises
KeyboardInterrupt as Ctrl-C does, so the command ends with ``error: interrupted`` and every atomic
writer removes its temporary file instead of the process dying with a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from recon3d import __version__
from recon3d.console import error_line, info, set_quiet
from recon3d.errors import Recon3dError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Raw 3D observations to clean, watertight meshes with neural implicit fields.",
)

EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 130

DeviceOpt = typer.Option("auto", "--device", help="auto (GPU when present), cpu or cuda[:N].")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object with the results on stdout.")
VerboseOpt = typer.Option(False, "--verbose", help="Show tracebacks for errors.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr.")
# Shared by every fit-* command (the command-line contract in the README).
StepsOpt = typer.Option(None, "--steps", help="Step budget \\[default: the preset's for the device].")
MaxSecondsOpt = typer.Option(None, "--max-seconds", help="Time budget for this run, seconds.")
LrOpt = typer.Option(None, "--lr", help="Peak learning rate \\[default: the preset's].")
AmpOpt = typer.Option(False, "--amp/--no-amp", help="bf16 mixed precision on GPU.")
SeedOpt = typer.Option(0, "--seed", help="Random seed (sampling and initialisation).")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run from the -o checkpoint.")


def _command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one ``error:`` line and an exit code; no tracebacks by default."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose"))
        set_quiet(bool(kwargs.get("quiet")))
        try:
            with _sigterm_as_interrupt():
                return func(*args, **kwargs)
        except typer.Exit:
            raise
        except Recon3dError as exc:
            _fail(str(exc), EXIT_ERROR, verbose)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED, verbose)
        except FloatingPointError as exc:
            _fail(f"{exc}; try a lower --lr or another --seed", EXIT_ERROR, verbose)
        except MemoryError:
            _fail("out of memory; try a smaller --batch, --resolution or --chunk", EXIT_ERROR, verbose)
        except OSError as exc:  # reading or writing files outside the readers/atomic writer: still one line
            _fail(_os_error_message(exc), EXIT_ERROR, verbose)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: still one line
            if type(exc).__name__ == "OutOfMemoryError":
                _fail("GPU out of memory; try a smaller --batch, --resolution or --chunk", EXIT_ERROR, verbose)
            _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --verbose for details)",
                  EXIT_INTERNAL, verbose)

    return wrapper


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt while a command runs (the training loop overrides this with
    its stop flag while it trains), so termination cleans up like Ctrl-C; the old handler comes back."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _os_error_message(exc: OSError) -> str:
    """``<path>: <strerror>`` (``disk full`` spelt out) for an OSError that escaped the library."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason += ": the disk is full"
    return f"{exc.filename}: {reason}" if exc.filename is not None else reason


def _fail(message: str, code: int, verbose: bool) -> None:
    if verbose:
        traceback.print_exc(file=sys.stderr)
    error_line(message)
    raise typer.Exit(code)


def _emit(summary: dict[str, Any], as_json: bool, plain: str | None) -> None:
    """Results on stdout: the JSON summary, or the plain result line (usually a path)."""
    if as_json:
        sys.stdout.write(json.dumps(summary, default=_json_default) + "\n")
    elif plain is not None:
        sys.stdout.write(plain + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _version(value: bool) -> None:
    if value:
        print(f"recon3d {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
) -> None:
    """recon3d: fit neural implicit fields to scans, meshes and images; export watertight meshes."""


@app.command("fit-sdf")
@_command
def fit_sdf_command(
    scan: Path = typer.Argument(..., help="Point cloud: PLY, PCD, XYZ/PTS/TXT, OBJ/OFF vertices, NPZ."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Checkpoint to write \\[default: SCAN's name + .pt]."),
    preset: str = typer.Option("fast", "--preset",
                               help="fast (hash grid, default), paper (IGR 8×512), siren, fourier."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", help="Scan points per step \\[default: the preset's]."),
    lr: Optional[float] = LrOpt,
    encoding: Optional[str] = typer.Option(None, "--encoding",
                                           help="Override the encoding: hashgrid, frequency, fourier, none."),
    normals: str = typer.Option("auto", "--normals", help="auto (the file's, else estimated), estimate, ignore."),
    denoise: str = typer.Option("auto", "--denoise",
                                help="Smooth noisy points onto local planes first: auto (when the noise is large "
                                     "against the point spacing), on, off."),
    outliers: str = typer.Option("drop", "--outliers",
                                 help="Isolated points (16th neighbour over 10× the median distance away): "
                                      "drop, keep."),
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit a signed distance field to a point cloud (IGR losses; hash grid, MLP, SIREN or Fourier field)."""
    _fit("fit-sdf", scan, output, device, resume, as_json, quiet, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp, encoding=encoding, normals=normals,
         denoise=denoise, outliers=outliers)


@app.command("fit-occupancy")
@_command
def fit_occupancy_command(
    shape: Path = typer.Argument(..., help="Mesh (OBJ, PLY, STL, OFF, GLB) or Occupancy Networks points.npz."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Checkpoint to write \\[default: SHAPE's name + .pt]."),
    preset: str = typer.Option("fast", "--preset", help="fast (hash grid, default), paper (ONet-style MLP), fourier."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", help="Labelled points per step \\[default: the preset's]."),
    lr: Optional[float] = LrOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit an occupancy network (BCE on labelled points); the surface is the τ = 0.5 decision boundary."""
    _fit("fit-occupancy", shape, output, device, resume, as_json, quiet, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp)


@app.command("fit-nerf")
@_command
def fit_nerf_command(
    scene: Path = typer.Argument(...,
                                 help="Scene folder (transforms_*.json or transforms.json) or a transforms json."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Checkpoint to write \\[default: SCENE's name + .pt]."),
    preset: str = typer.Option("fast", "--preset",
                               help="fast (hash grid + occupancy grid, default) or paper (NeRF 8×256, "
                                    "64+128 samples)."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch",
                                        help="Rays per step \\[default: the preset's; fast adapts it]."),
    lr: Optional[float] = LrOpt,
    downscale: int = typer.Option(1, "--downscale", help="Shrink images by this integer factor at load."),
    white_background: bool = typer.Option(True, "--white-background/--black-background",
                                          help="Background the RGBA images are composited on."),
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit a radiance field (NeRF) to posed images; render it with `render`, mesh it with `extract-mesh`."""
    background = (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    _fit("fit-nerf", scene, output, device, resume, as_json, quiet, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp, downscale=downscale, background=background)


def _fit(command: str, path: Path, output: Path | None, device: str, resume: bool, as_json: bool, quiet: bool,
         **options: Any) -> None:
    """Every fit-* command: the method the input asks for, its options, the fit, the result line."""
    from recon3d.device import resolve_device
    from recon3d.fit.registry import method_for
    from recon3d.fit.run import fit_file, make_options

    method = method_for(command, path)
    out = _checkpoint_path(output, method.default_stem(path))
    torch_device = resolve_device(device)
    summary = fit_file(method, path, make_options(method, **options), out, torch_device, resume=resume,
                       show_progress=not quiet)
    _finish_fit(summary, out, as_json, f"recon3d {command} {path} -o {out} --resume")


@app.command("render")
@_command
def render_command(
    model: Path = typer.Argument(..., help="A recon3d radiance-field checkpoint (from fit-nerf)."),
    scene: Path = typer.Option(..., "--scene",
                               help="The scene folder or transforms json (cameras and reference images)."),
    split: str = typer.Option("test", "--split",
                              help="Views to render: train, val, test (or all for one-file scenes)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Folder for the PNGs \\[default: no images, metrics only]."),
    orbit: int = typer.Option(0, "--orbit", help="Instead of the split: N frames circling the scene."),
    gif: bool = typer.Option(False, "--gif", help="With --orbit: write one orbit.gif instead of PNG frames."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Render only the first N views."),
    downscale: Optional[int] = typer.Option(None, "--downscale",
                                            help="Image shrink factor \\[default: the training run's]."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Render held-out views with PSNR and SSIM per view and mean, or an orbit (PNG frames or a GIF)."""
    from recon3d.render.views import RenderOptions, render_model

    options = RenderOptions(split=split, output=output, orbit=orbit, gif=gif, limit=limit, downscale=downscale)
    result = render_model(model, scene, options, device, show_progress=not quiet)
    if orbit:
        files = result["files"]
        info(f"{result['frames']} orbit frames; wrote {', '.join(files[:1])}{' ...' if len(files) > 1 else ''}")
        _emit({"model": str(model), **result}, as_json, str(output))
        return
    info(f"{split}: {len(result['views'])} views, PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} "
         f"({result['seconds_per_view']:.2f} s per view)")
    summary = {"model": str(model), "scene": str(scene), **result}
    plain = "\n".join(f"{v['view']}  psnr {v['psnr']:.3f}  ssim {v['ssim']:.4f}" for v in result["views"])
    _emit(summary, as_json, plain + f"\nmean  psnr {result['psnr']:.3f}  ssim {result['ssim']:.4f}")


def _checkpoint_path(output: Path | None, stem: str) -> Path:
    """The checkpoint a fit writes (default: the input's name + .pt), checked before any long work."""
    out = output or Path(stem + ".pt")
    folder = out.parent
    if not folder.is_dir():
        raise Recon3dError(f"{out}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Recon3dError(f"{out}: output folder {folder} is not writable")
    return out


def _finish_fit(summary: dict[str, Any], out: Path, as_json: bool, resume_command: str) -> None:
    if summary["stopped_by"] == "interrupt":
        info(f"interrupted at step {summary['steps']}; resumable checkpoint written to {out}")
        info(f"continue with: {resume_command}")
        _emit(summary, as_json, str(out))
        raise typer.Exit(EXIT_INTERRUPTED)
    info(f"fitted in {summary['seconds']:.1f} s ({summary['steps']} steps, stopped by {summary['stopped_by']}); "
         f"wrote {out}")
    _emit(summary, as_json, str(out))


@app.command("extract-mesh")
@_command
def extract_mesh_command(
    model: Path = typer.Argument(..., help="A recon3d checkpoint (.pt)."),
    output: Path = typer.Option(..., "-o", "--output", help="Mesh file (.obj .ply .stl .off .glb), or - for stdout."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r",
                                             help="Cells along the longest side \\[default: 512 on GPU, 256 on CPU]."),
    level: Optional[float] = typer.Option(None, "--level",
                                          help="Iso-level \\[default: the checkpoint's own]; for occupancy a "
                                               "probability τ in (0, 1)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="obj, ply, stl, off or glb (needed with -o -)."),
    method: str = typer.Option("mise", "--method", help="mise (coarse-to-fine, default; also 'sparse') or dense."),
    refine: int = typer.Option(0, "--refine",
                               help="Newton steps moving vertices onto the level along the gradient (0: off)."),
    largest_component: bool = typer.Option(False, "--largest-component", help="Keep only the largest connected piece."),
    keep_unsupported: bool = typer.Option(False, "--keep-unsupported",
                                          help="Keep closed pieces that no scan point is near (fit-sdf models drop "
                                               "them by default)."),
    normals: str = typer.Option("field", "--normals", help="Vertex normals: field (gradient), mesh, none."),
    marching: str = typer.Option("table", "--marching-cubes",
                                 help="table (all cells at once, on the device) or lewiner (scikit-image, CPU)."),
    chunk: int = typer.Option(2**18, "--chunk", help="Points per field evaluation."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Marching cubes at the checkpoint's level: a closed mesh in the input's units."""
    from recon3d.device import resolve_device
    from recon3d.io.checkpoint import load_checkpoint
    from recon3d.io.mesh import check_mesh_output, write_mesh
    from recon3d.mesh.from_field import MeshOptions, mesh_from_checkpoint

    to_stdout = str(output) == "-"
    check_mesh_output(output, fmt)
    options = MeshOptions(resolution=resolution, level=level, method={"mise": "sparse"}.get(method, method),
                          largest_component=largest_component, normals=normals, chunk=chunk, refine=refine,
                          marching_cubes=marching, keep_unsupported=keep_unsupported)
    options.validate()
    checkpoint = load_checkpoint(model)
    torch_device = resolve_device(device)
    start = time.perf_counter()
    mesh, stats = mesh_from_checkpoint(checkpoint, options, torch_device)
    if stats["dropped_unsupported"]:
        pieces = stats["dropped_unsupported"]
        info(f"dropped {pieces} closed piece{'s' if pieces > 1 else ''} with no scan points near "
             f"{'them' if pieces > 1 else 'it'} (--keep-unsupported keeps {'them' if pieces > 1 else 'it'})")
    if mesh.n_faces == 0:
        raise Recon3dError(f"{model}: the field has no surface at level {stats['level']} inside its bounds")
    write_mesh("-" if to_stdout else output, mesh, fmt)
    stats["seconds"]["total_with_write"] = time.perf_counter() - start
    info(f"{stats['faces']:,} faces, {stats['vertices']:,} vertices at {'x'.join(map(str, stats['resolution']))} "
         f"in {stats['seconds']['total_with_write']:.2f} s" + ("" if to_stdout else f"; wrote {output}"))
    if not to_stdout:
        _emit({"mesh": str(output), **stats}, as_json, str(output))


@app.command("eval")
@_command
def eval_command(
    pred: Path = typer.Argument(..., help="Predicted mesh (or point cloud)."),
    ref: Path = typer.Argument(..., help="Reference mesh or point cloud."),
    samples: int = typer.Option(200_000, "--samples", help="Surface samples per mesh."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Chamfer-L1/L2, F-score, normal consistency, Hausdorff, watertightness, volume IoU."""
    from recon3d.io.shape import read_shape
    from recon3d.metrics import evaluate

    if samples < 1000:
        raise Recon3dError("--samples must be at least 1000")
    result = evaluate(read_shape(pred), read_shape(ref), n_samples=samples, seed=seed)
    if as_json:
        _emit({"pred": str(pred), "ref": str(ref), **result}, True, None)
        return
    width = max(len(k) for k in result)
    lines = [f"{k:<{width}}  {_fmt(v)}" for k, v in result.items()]
    _emit({}, False, "\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@app.command("info")
@_command
def info_command(
    model: Path = typer.Argument(..., help="A recon3d checkpoint (.pt)."),
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """What a checkpoint holds: kind, level, field, units, training record."""
    from recon3d.fit.describe import describe_checkpoint
    from recon3d.io.checkpoint import load_checkpoint

    described = describe_checkpoint(load_checkpoint(model))
    if as_json:
        _emit({"checkpoint": str(model), **described}, True, None)
        return
    width = max(len(k) for k in described)
    _emit({}, False, "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in described.items()))


@app.command("demo")
@_command
def demo_command(
    output: Path = typer.Option(Path("recon3d-demo"), "-o", "--output", help="Folder for the demo's files."),
    steps: Optional[int] = StepsOpt,
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", help="Extraction resolution."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """End to end on a generated scan: scan → fit-sdf → extract-mesh → eval against the exact shape."""
    from recon3d.demo import run_demo
    from recon3d.device import resolve_device

    summary = run_demo(output, resolve_device(device), steps=steps, resolution=resolution,
                       show_progress=not quiet)
    _emit(summary, as_json, str(summary["mesh"]))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
