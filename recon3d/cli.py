"""The recon3d command line: parse, validate, call the library, print.

stdout carries results only (written paths, or one JSON object with --json: strict JSON, NaN and
infinities as null); progress, logs and warnings go to stderr. Bad input ends with one ``error: …``
line and a non-zero exit code.

Exit codes: 0 success (also ``--help``, ``--version`` and a bare ``recon3d``, which prints the help);
1 any user error: bad input, an option value out of range, a usage error that click finds (an unknown
option, ``--steps abc``, a missing argument; click's own convention would be 2, but here 2 means a bug),
a refused or locked output, stdout closed or a broken pipe; 2 an internal error (a bug: please report
it); 130 interrupted.

Outputs (recon3d.io.atomic): an output is never an input of the same run (same path or same file through
links); a symlink output is written through to its target; folders, FIFOs and devices are refused as
outputs (``-o -`` writes a mesh to stdout); a fit, extract-mesh and demo hold a lock on each output, so a
second run writing the same file is refused at once.

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
import os
import re
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import typer
import typer.core

from recon3d import __version__
from recon3d.console import error_line, info, set_quiet
from recon3d.errors import Recon3dError
from recon3d.io.atomic import check_output, json_text, output_lock, protect_inputs

EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 130
#: click's usage errors (unknown option, not a number, missing argument): a user error like any other.
EXIT_USAGE = EXIT_ERROR

#: The exceptions of the click that typer runs on (recent typer vendors its own copy of click).
_click_errors = sys.modules[typer.BadParameter.__module__]
_NoArgsIsHelp = getattr(_click_errors, "NoArgsIsHelpError", ())  # click >= 8.2
_Abort = (typer.Abort, getattr(_click_errors, "Abort", typer.Abort))


class _OneLineErrors(typer.core.TyperGroup):
    """The app's click group: usage and parameter errors that click finds become one ``error: …`` line
    (exit EXIT_USAGE) instead of a boxed usage panel, also under typer's CliRunner; help still prints."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:  # an embedding caller handles click's exceptions itself
            return super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        try:
            code = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                                standalone_mode=False, **extra)
        except _NoArgsIsHelp as exc:  # a bare ``recon3d``: the help, as --help
            typer.echo(exc.ctx.get_help(), color=exc.ctx.color)
            code = 0
        except _click_errors.ClickException as exc:
            code = _usage_error(exc)
        except _Abort:
            error_line("interrupted")
            code = EXIT_INTERRUPTED
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Any) -> int:
    """Print a click error as one ``error:`` line (with where to find the command's help)."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    usage = isinstance(exc, _click_errors.UsageError)
    if usage and ctx is not None:
        names = []
        while ctx.parent is not None:  # the subcommands, without the program (``python -m recon3d.cli``)
            names.append(ctx.info_name)
            ctx = ctx.parent
        message = f"{message.rstrip('.')} (see {' '.join(['recon3d', *reversed(names)])} --help)"
    error_line(message)
    return EXIT_USAGE if usage else (exc.exit_code or EXIT_ERROR)


app = typer.Typer(
    cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Raw 3D observations to clean, watertight meshes with neural implicit fields.",
)

DeviceOpt = typer.Option("auto", "--device", help="auto (GPU when present), cpu or cuda[:N].")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object with the results on stdout.")
VerboseOpt = typer.Option(False, "--verbose", help="Show tracebacks for errors.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr.")
# Shared by every fit-* command (the command-line contract in the README).
StepsOpt = typer.Option(None, "--steps", help="Step budget \\[default: the preset's for the device].")
MaxSecondsOpt = typer.Option(None, "--max-seconds", help="Time budget for this run, seconds.")
LrOpt = typer.Option(None, "--lr", help="Peak learning rate \\[default: the preset's].")
AmpOpt = typer.Option(False, "--amp/--no-amp", help="bf16 mixed precision on GPU.")
# Scene options (fit-nerf, and fit-sdf / fit-occupancy on a scene of posed images).
DownscaleOpt = typer.Option(None, "--downscale", help="Scenes: shrink images by this integer factor at load "
                                                      "\\[default: 1].")
BackgroundOpt = typer.Option(None, "--white-background/--black-background",
                             help="Scenes: the background RGBA images are composited on \\[default: white].")
BoxOpt = typer.Option(None, "--box", metavar="XMIN,YMIN,ZMIN,XMAX,YMAX,ZMAX",
                      help="Scenes: the region to fit, in world units \\[default: the masks' visual hull, else "
                           "the scene's box].")
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
        except BrokenPipeError:
            _silence_stdout()
            _fail("stdout was closed (broken pipe); the output printed there is incomplete", EXIT_ERROR, verbose)
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


def _emit(summary: dict[str, Any], as_json: bool, plain: str | None, written: str | None = None) -> None:
    """Results on stdout: the JSON summary (strict JSON), or the plain result line (usually a path).
    ``written``: the file the command wrote, named in the error when stdout is closed."""
    text = json_text(summary) + "\n" if as_json else (None if plain is None else plain + "\n")
    if text is None:
        return
    if _stdout_closed():
        raise Recon3dError("stdout is closed; the result was not printed"
                           + (f" ({written} was written)" if written else ""))
    sys.stdout.write(text)
    sys.stdout.flush()


def _stdout_closed() -> bool:
    """Whether there is no stdout to print to (started with stdout closed, e.g. ``>&-``)."""
    return sys.stdout is None or _STDOUT_CLOSED


#: Set by main() when the process started with stdout closed (its descriptor now points at devnull).
_STDOUT_CLOSED = False


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at devnull, so the flush at exit raises no second error (the
    pattern Python's documentation on SIGPIPE recommends)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


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
    scan: Path = typer.Argument(..., metavar="INPUT",
                                help="Point cloud (PLY, PCD, XYZ/PTS/TXT, OBJ/OFF vertices, NPZ), or a scene of "
                                     "posed images (a folder or a transforms json: NeuS)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Checkpoint to write \\[default: INPUT's name + .pt]."),
    preset: str = typer.Option("fast", "--preset",
                               help="fast (hash grid, default), paper (IGR 8×512), siren, fourier; a scene: fast."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", help="Scan points per step \\[default: the preset's]."),
    lr: Optional[float] = LrOpt,
    encoding: Optional[str] = typer.Option(None, "--encoding",
                                           help="Override the encoding: hashgrid, frequency, fourier, none."),
    normals: Optional[str] = typer.Option(None, "--normals",
                                          help="Point clouds: auto (the file's, else estimated; default), estimate, "
                                               "ignore."),
    denoise: Optional[str] = typer.Option(None, "--denoise",
                                          help="Point clouds: smooth noisy points onto local planes first: auto "
                                               "(when the noise is large against the point spacing; default), on, "
                                               "off."),
    outliers: Optional[str] = typer.Option(None, "--outliers",
                                           help="Point clouds: isolated points (16th neighbour over 10× the median "
                                                "distance away): drop (default), keep."),
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit a signed distance field to a point cloud (IGR) or to a scene of posed images (NeuS)."""
    _fit("fit-sdf", scan, output, device, resume, as_json, quiet, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp, encoding=encoding, normals=normals,
         denoise=denoise, outliers=outliers, **_scene_options(downscale, white_background, box))


@app.command("fit-occupancy")
@_command
def fit_occupancy_command(
    shape: Path = typer.Argument(..., metavar="INPUT",
                                 help="Mesh (OBJ, PLY, STL, OFF, GLB), Occupancy Networks points.npz, or a scene of "
                                      "posed images (a folder or a transforms json: UNISURF, or DVR)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Checkpoint to write \\[default: INPUT's name + .pt]."),
    preset: str = typer.Option("fast", "--preset",
                               help="fast (hash grid, default), paper (ONet-style MLP), fourier; a scene: fast "
                                    "(UNISURF), dvr."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", help="Labelled points per step \\[default: the preset's]."),
    lr: Optional[float] = LrOpt,
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit an occupancy field (BCE on labelled points, or rendered into posed images); surface τ = 0.5."""
    _fit("fit-occupancy", shape, output, device, resume, as_json, quiet, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp,
         **_scene_options(downscale, white_background, box))


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
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit a radiance field (NeRF) to posed images; render it with `render`, mesh it with `extract-mesh`."""
    _fit("fit-nerf", scene, output, device, resume, as_json, quiet, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp,
         **_scene_options(downscale, white_background, box))


def _scene_options(downscale: int | None, white_background: bool | None, box: str | None) -> dict[str, Any]:
    """The scene options as the methods' options take them (None: not given)."""
    background = None if white_background is None else (1.0, 1.0, 1.0) if white_background else (0.0, 0.0, 0.0)
    return {"downscale": downscale, "background": background, "box": None if box is None else _parse_box(box)}


def _parse_box(text: str) -> tuple[float, ...]:
    """``--box xmin,ymin,zmin,xmax,ymax,zmax`` as six floats, or one clear error."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 6:
        raise Recon3dError(f"--box {text}: give six numbers xmin,ymin,zmin,xmax,ymax,zmax (world units)")
    return values


def _fit(command: str, path: Path, output: Path | None, device: str, resume: bool, as_json: bool, quiet: bool,
         **options: Any) -> None:
    """Every fit-* command: the method the input asks for, its options, the fit, the result line."""
    from recon3d.device import resolve_device
    from recon3d.fit.registry import method_for
    from recon3d.fit.run import fit_file, make_options

    method = method_for(command, path)
    out = output or Path(method.default_stem(path) + ".pt")
    inputs = method.input_files(path)
    fit_options = make_options(method, **options)
    torch_device = resolve_device(device)
    summary = fit_file(method, path, fit_options, out, torch_device, resume=resume, show_progress=not quiet,
                       inputs=inputs)
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
    from recon3d.io.scene import scene_files
    from recon3d.render.views import RenderOptions, render_model

    options = RenderOptions(split=split, output=output, orbit=orbit, gif=gif, limit=limit, downscale=downscale)
    inputs = [model, *scene_files(scene, "train" if orbit else split)]
    if output is not None:
        if str(output) == "-":
            raise Recon3dError("-o -: render writes image files into a folder; give a folder name")
        _check_render_folder(output, inputs)
    with protect_inputs(inputs):
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


#: The names render writes into its -o folder (recon3d.render.views): views, orbit frames, the orbit GIF.
_RENDER_NAMES = re.compile(r"(.+_\d{3,}_.*\.png|orbit_\d{3,}\.png|orbit\.gif)")


def _check_render_folder(output: Path, inputs: list[Path]) -> None:
    """Refuse a render -o folder holding an input (scene image, json, model) under a name render writes."""
    if not output.is_dir():
        return
    for path in inputs:
        if _RENDER_NAMES.fullmatch(path.name) and path.parent.is_dir() and os.path.samefile(path.parent, output):
            raise Recon3dError(f"{output}: holds the input {path}, which render would overwrite with its own "
                               "image of that name; choose another -o")


def _finish_fit(summary: dict[str, Any], out: Path, as_json: bool, resume_command: str) -> None:
    if summary["stopped_by"] == "interrupt":
        info(f"interrupted at step {summary['steps']}; resumable checkpoint written to {out}")
        info(f"continue with: {resume_command}")
        _emit(summary, as_json, str(out), written=str(out))
        raise typer.Exit(EXIT_INTERRUPTED)
    info(f"fitted in {summary['seconds']:.1f} s ({summary['steps']} steps, stopped by {summary['stopped_by']}); "
         f"wrote {out}")
    _emit(summary, as_json, str(out), written=str(out))


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
    check_output(output, [model], allow_stdout=True, what="mesh")
    check_mesh_output(output, fmt)
    if to_stdout and _stdout_closed():
        raise Recon3dError("-o -: stdout is closed; give a file name")
    options = MeshOptions(resolution=resolution, level=level, method={"mise": "sparse"}.get(method, method),
                          largest_component=largest_component, normals=normals, chunk=chunk, refine=refine,
                          marching_cubes=marching, keep_unsupported=keep_unsupported)
    options.validate()
    lock = contextlib.nullcontext() if to_stdout else output_lock(output)
    with lock, protect_inputs([model]):
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
        _emit({"mesh": str(output), **stats}, as_json, str(output), written=str(output))


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
    from recon3d.metrics import check_eval_options, evaluate

    check_eval_options(samples, seed)  # before reading: evaluate checks again for library callers
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
    force: bool = typer.Option(False, "--force", help="Overwrite the demo's files in an existing folder."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """End to end on a generated scan: scan → fit-sdf → extract-mesh → eval against the exact shape."""
    from recon3d.demo import run_demo
    from recon3d.device import resolve_device

    summary = run_demo(output, resolve_device(device), steps=steps, resolution=resolution,
                       show_progress=not quiet, force=force)
    _emit(summary, as_json, str(summary["mesh"]), written=f"the demo's files in {output}")


def main() -> None:
    """Console-script entry point."""
    _reopen_closed_standard_streams()
    app()


def _reopen_closed_standard_streams() -> None:
    """Point a closed stdin / stdout / stderr descriptor at devnull, so files the command opens never take
    descriptors 0-2. A closed stdout is remembered (results cannot be printed: an error at the end); a closed
    stderr silences messages, the exit code still tells."""
    global _STDOUT_CLOSED
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            if fd == 1:
                _STDOUT_CLOSED = True
            elif fd == 2 and sys.stderr is None:
                sys.stderr = open(fd, "w", closefd=False)  # the process's stderr (devnull now), kept open


if __name__ == "__main__":
    main()
