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

Messages: the library logs through :mod:`logging`; each command installs recon3d.console's stderr handler
while it runs (info lines plain, warnings as ``warning: …``; ``-q`` keeps warnings and errors only), and
uses ``--threads N`` CPU threads (default: recon3d.device.default_threads). Progress is a rich bar on a
terminal and periodic plain lines elsewhere (recon3d.console.Progress).

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
from typing import Any, Callable, Literal, Optional

import typer
import typer.core

from recon3d import __version__
from recon3d.console import error_line, info, stderr_logging
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
    (exit EXIT_USAGE) instead of a boxed usage panel, also under typer's CliRunner; help still prints,
    with flags shown as flags and arguments by name (:func:`_tidy_help`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy_help(self)
        for command in self.commands.values():
            _tidy_help(command)

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


def _tidy_help(command: Any) -> None:
    """Help as a user reads it: a flag (``--json``, ``--amp/--no-amp``, ``--help``) shows no ``<bool>`` type
    (it takes no value), and the usage line names arguments plainly (``INPUT``, not ``{INPUT}``)."""
    original = command.get_params

    def get_params(ctx: Any) -> list[Any]:
        params = original(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.display_type_rich = lambda ctx: None
            elif getattr(param, "param_type_name", "") == "argument":
                param.get_usage_pieces = lambda ctx, p=param: [p.metavar or p.name.upper()]
        return params

    command.get_params = get_params


def _usage_error(exc: Any) -> int:
    """Print a click error as one ``error:`` line (with where to find the command's help)."""
    message = exc.format_message().replace("Value error, ", "")
    choice = re.fullmatch(r"Invalid value for '([^']+)': '(.*)' is not one of (.*?)\.?", message, re.DOTALL)
    if choice:  # as the library words it: "--denoise maybe: choose auto, on, off"
        option = choice.group(1).split("/")[0]
        message = f"{option} {choice.group(2)}: choose {choice.group(3).replace(chr(39), '')}"
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
    cls=_OneLineErrors, add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Raw 3D observations to clean, watertight meshes with neural implicit fields.\n\n"
         "New here? recon3d sample-data -o data (a scan, a mesh, a scene), then recon3d demo; "
         "every command has an example in its --help. Shell completion: recon3d --install-completion.",
)

DeviceOpt = typer.Option("auto", "--device", metavar="DEVICE", help="auto (the GPU when there is one), cpu, cuda or "
                                                                   "cuda:N.")
ThreadsOpt = typer.Option(None, "--threads", metavar="N", help="CPU threads \\[default: the CPUs this process may use, "
                                                              "at most one per core; OMP_NUM_THREADS if set]. Use 1 "
                                                              "on a machine other jobs keep busy.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object with the results on stdout.")
VerboseOpt = typer.Option(False, "--verbose", help="Show tracebacks for errors.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress or log lines on stderr (warnings and errors stay).")
# Shared by every fit-* command (the command-line contract in the README).
StepsOpt = typer.Option(None, "--steps", metavar="N", help="Step budget \\[default: the preset's for the device, "
                                                          "see above].")
MaxSecondsOpt = typer.Option(None, "--max-seconds", metavar="S", help="Time budget for training, seconds (training "
                                                                     "stops at whichever budget ends first).")
LrOpt = typer.Option(None, "--lr", metavar="LR", help="Peak learning rate \\[default: the preset's].")
AmpOpt = typer.Option(False, "--amp/--no-amp", help="bf16 mixed precision on GPU \\[default: off].")
ForceOpt = typer.Option(False, "--force", help="Replace a checkpoint another method (or kind of input) wrote at -o.")
PlotOpt = typer.Option(None, "--plot", metavar="PNG", help="Also write the loss curve (and the training PSNR of "
                                                           "image fits) as a PNG.")
# Scene options (fit-nerf, and fit-sdf / fit-occupancy on a scene of posed images).
DownscaleOpt = typer.Option(None, "--downscale", metavar="K", help="Scenes: shrink images by this integer factor at "
                                                                  "load \\[default: 1].")
BackgroundOpt = typer.Option(None, "--white-background/--black-background",
                             help="Scenes: the background RGBA images are composited on \\[default: white].")
BoxOpt = typer.Option(None, "--box", metavar="XMIN,YMIN,ZMIN,XMAX,YMAX,ZMAX",
                      help="Scenes: the region to fit, in world units \\[default: the masks' visual hull, else "
                           "the scene's box].")
TriangulateOpt = typer.Option(None, "--triangulate/--no-triangulate",
                              help="Scenes without masks or sparse points (fit-sdf): triangulate points from the "
                                   "images and poses first (pycolmap, CPU), for the region \\[default: on].")
DepthOpt = typer.Option(None, "--depth/--no-depth",
                        help="Scenes with sparse points: DS-NeRF's depth term on their observations \\[default: on].")
SeedOpt = typer.Option(0, "--seed", metavar="N", help="Random seed (sampling and initialisation).")
ResumeOpt = typer.Option(False, "--resume", help="Continue an interrupted run from the -o checkpoint.")
FitOutputOpt = typer.Option(None, "-o", "--output", metavar="MODEL.pt",
                            help="Checkpoint to write \\[default: the input's name and the field's kind: scan.ply → "
                                 "scan.sdf.pt, in the working folder].")

#: Choices, shown in --help and checked by click (the library checks again for library callers).
SdfPreset = Literal["fast", "paper", "siren", "fourier"]
OccupancyPreset = Literal["fast", "paper", "fourier", "dvr"]
NerfPreset = Literal["fast", "paper"]
Encoding = Literal["hashgrid", "frequency", "fourier", "none"]
NormalsMode = Literal["auto", "estimate", "ignore"]
DenoiseMode = Literal["auto", "on", "off"]
OutlierMode = Literal["drop", "keep"]
Split = Literal["test", "val", "train", "all"]
MeshMethod = Literal["mise", "sparse", "dense"]
MeshNormals = Literal["field", "mesh", "none"]
Marching = Literal["table", "lewiner"]
MeshFormat = Literal["obj", "ply", "stl", "off", "glb"]


def _help(*paragraphs: str) -> str:
    """A command's help: its one-line summary (what ``recon3d --help`` lists), then paragraphs that rich
    wraps to the terminal's width."""
    return "\n\n".join(paragraphs)


def _example(*lines: str) -> str:
    """A command's help epilog: its examples, one per line."""
    return "Example:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def _command(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one ``error:`` line and an exit code; no tracebacks by default."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose"))
        try:
            with stderr_logging(quiet=bool(kwargs.get("quiet"))), _sigterm_as_interrupt(), \
                    _threads(kwargs.get("threads")):
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


@contextlib.contextmanager
def _threads(threads: int | None):
    """The command's CPU threads (``--threads``; default recon3d.device.default_threads), restored after."""
    from recon3d.device import use_threads

    with use_threads(threads):
        yield


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


def _emit(summary: dict[str, Any], as_json: bool, plain: str | None, written: str | None = None,
          to_stderr: bool = False) -> None:
    """Results on stdout: the JSON summary (strict JSON), or the plain result line (usually a path).
    ``written``: the file the command wrote, named in the error when stdout is closed. ``to_stderr``: the
    JSON goes to stderr instead (stdout already carries a mesh: ``extract-mesh -o - --json``)."""
    text = json_text(summary) + "\n" if as_json else (None if plain is None else plain + "\n")
    if text is None:
        return
    if to_stderr:
        sys.stderr.write(text)
        sys.stderr.flush()
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


# ------------------------------------------------------------------------------------------ fits


@app.command("fit-sdf", help=_help(
               "Fit a signed distance field to a point cloud (IGR) or to posed images (NeuS).",
               "Default budget (preset fast): a point cloud 1500 steps × 4096 points on a CPU (about 2 minutes for a "
               "360k-point scan on a 2-core CPU), 1000 × 32768 on a GPU (about 8 s on an H200); a scene 800 steps on "
               "a CPU (8 minutes for the sample scene on a busy 2-core CPU), 3000 on a GPU. --steps and "
               "--max-seconds change it."),
             epilog=_example("recon3d fit-sdf scan.ply                  # → scan.sdf.pt",
                             "recon3d fit-sdf data/scene -o surface.pt --plot loss.png   # NeuS"))
@_command
def fit_sdf_command(
    scan: Path = typer.Argument(..., metavar="INPUT",
                                help="Point cloud (PLY, PCD, XYZ/PTS/TXT, OBJ/OFF vertices, NPZ), or a scene of "
                                     "posed images (a folder or a transforms json: NeuS)."),
    output: Optional[Path] = FitOutputOpt,
    preset: SdfPreset = typer.Option("fast", "--preset",
                                     help="fast (hash grid), paper (IGR 8×512), siren, fourier; a scene: fast."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", metavar="N",
                                        help="Scan points per step \\[default: the preset's: fast 4096 on a CPU, "
                                             "32768 on a GPU]."),
    lr: Optional[float] = LrOpt,
    encoding: Optional[Encoding] = typer.Option(None, "--encoding", help="Override the preset's encoding."),
    normals: Optional[NormalsMode] = typer.Option(None, "--normals",
                                                  help="Point clouds: auto (the file's, else estimated), estimate, "
                                                       "ignore \\[default: auto]."),
    denoise: Optional[DenoiseMode] = typer.Option(None, "--denoise",
                                                  help="Point clouds: smooth noisy points onto local planes first: "
                                                       "auto (when the noise is large against the point spacing), "
                                                       "on, off \\[default: auto]."),
    outliers: Optional[OutlierMode] = typer.Option(None, "--outliers",
                                                   help="Point clouds: isolated points (16th neighbour over 10× the "
                                                        "median distance away): drop or keep \\[default: drop]."),
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    triangulate: Optional[bool] = TriangulateOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    plot: Optional[Path] = PlotOpt,
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit a signed distance field to a point cloud (IGR) or to posed images (NeuS)."""
    _fit("fit-sdf", scan, output, device, resume, as_json, quiet, force, plot, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp, encoding=encoding, normals=normals,
         denoise=denoise, outliers=outliers, triangulate=triangulate,
         **_scene_options(downscale, white_background, box))


@app.command("fit-occupancy", help=_help(
               "Fit an occupancy field to a mesh, labelled points or posed images; surface τ = 0.5.",
               "Default budget (preset fast): a mesh 1000 steps × 8192 points on a CPU (about 75 s for a 94k-face "
               "mesh on a 2-core CPU), 2000 × 65536 on a GPU (fit and extraction 6-8 s on an H200); a scene 800 "
               "steps on a CPU, 3000 on a GPU."),
             epilog=_example("recon3d fit-occupancy shape.obj                  # → shape.occupancy.pt",
                             "recon3d fit-occupancy points.npz -o occ.pt --steps 500"))
@_command
def fit_occupancy_command(
    shape: Path = typer.Argument(..., metavar="INPUT",
                                 help="Mesh (OBJ, PLY, STL, OFF, GLB), Occupancy Networks points.npz, or a scene of "
                                      "posed images (a folder or a transforms json: UNISURF, or DVR)."),
    output: Optional[Path] = FitOutputOpt,
    preset: OccupancyPreset = typer.Option("fast", "--preset",
                                           help="fast (hash grid), paper (ONet-style MLP), fourier; a scene: fast "
                                                "(UNISURF) or dvr."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", metavar="N",
                                        help="Labelled points (scenes: rays) per step \\[default: the preset's: fast "
                                             "8192 on a CPU, 65536 on a GPU]."),
    lr: Optional[float] = LrOpt,
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    plot: Optional[Path] = PlotOpt,
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit an occupancy field to a mesh, labelled points or posed images; surface τ = 0.5."""
    _fit("fit-occupancy", shape, output, device, resume, as_json, quiet, force, plot, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp,
         **_scene_options(downscale, white_background, box))


@app.command("fit-nerf", help=_help(
               "Fit a radiance field (NeRF) to posed images; render it with render, mesh it with extract-mesh.",
               "Default budget (preset fast): 500 steps × 1024 rays on a CPU (3.5 minutes for the sample scene on a "
               "busy 2-core CPU), 20000 × 4096 on a GPU (lego at 400×400 on an H200: 33.7 dB after 30 s, 36.3 dB "
               "with --max-seconds 180)."),
             epilog=_example("recon3d fit-nerf data/scene                     # → scene.nerf.pt",
                             "recon3d fit-nerf lego/ -o lego.pt --max-seconds 60 --plot psnr.png"))
@_command
def fit_nerf_command(
    scene: Path = typer.Argument(..., metavar="SCENE",
                                 help="Scene folder (transforms_*.json or transforms.json) or a transforms json."),
    output: Optional[Path] = FitOutputOpt,
    preset: NerfPreset = typer.Option("fast", "--preset",
                                      help="fast (hash grid + occupancy grid) or paper (NeRF 8×256, 64+128 "
                                           "samples)."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", metavar="RAYS",
                                        help="Rays per step \\[default: the preset's: fast 1024 on a CPU, 4096 on a "
                                             "GPU, adapted to the samples]."),
    lr: Optional[float] = LrOpt,
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    depth: Optional[bool] = DepthOpt,
    amp: bool = AmpOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
    resume: bool = ResumeOpt,
    force: bool = ForceOpt,
    plot: Optional[Path] = PlotOpt,
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit a radiance field (NeRF) to posed images; render it with render, mesh it with extract-mesh."""
    _fit("fit-nerf", scene, output, device, resume, as_json, quiet, force, plot, preset=preset, steps=steps,
         max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp, depth=depth,
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


def _check_plot(plot: Path | None, inputs: list[Path], output: Path | None = None) -> None:
    """``--plot PNG``: a .png file that is neither an input nor the other output, checked before any work."""
    if plot is None:
        return
    _named(lambda: check_output(plot, inputs, suffixes=(".png",), example="loss.png", what="plot"), "--plot")
    if output is not None and plot.resolve() == Path(output).resolve():
        raise Recon3dError(f"--plot {plot}: is also -o; give the plot its own name")


def _fit(command: str, path: Path, output: Path | None, device: str, resume: bool, as_json: bool, quiet: bool,
         force: bool, plot: Path | None, **options: Any) -> None:
    """Every fit-* command: the method the input asks for, its options, the fit, the result line; many
    inputs (a folder of inputs, or a pattern) go to :func:`_fit_many`. Under torchrun one input is fitted
    data-parallel by every rank (recon3d.fit.loop.Sharding; rank 0 writes and prints)."""
    from recon3d import distributed
    from recon3d.console import set_quiet
    from recon3d.device import resolve_device
    from recon3d.fit.registry import method_for
    from recon3d.fit.run import default_output, fit_file, make_options

    if _many_inputs(path):
        _fit_many(command, path, output, device, resume, as_json, quiet, force, plot, **options)
        return
    method = method_for(command, path)
    out = output or default_output(method, path)
    inputs = method.input_files(path)
    fit_options = make_options(method, **options)
    _check_plot(plot, [path, *inputs], out)
    torch_device = resolve_device(device)
    ranks = distributed.setup("nccl" if torch_device.type == "cuda" else "gloo")
    if not ranks.leader:
        set_quiet(True)  # one rank's log lines are every rank's (warnings still show)
    with distributed.leaving_together():
        summary = fit_file(method, path, fit_options, out, distributed.rank_device(ranks, torch_device),
                           resume=resume, show_progress=not quiet and ranks.leader, inputs=inputs, force=force)
    if not ranks.leader:  # rank 0 wrote the checkpoint and prints
        if summary["stopped_by"] == "interrupt":
            raise typer.Exit(EXIT_INTERRUPTED)
        return
    if plot is not None:
        _write_plot(plot, out, f"{command} {path.name}")
        summary["plot"] = str(plot)
    _finish_fit(summary, out, as_json, f"recon3d {command} {path} -o {out} --resume")


def _many_inputs(path: Path) -> bool:
    """Whether a command's INPUT names many inputs: a glob pattern, or a folder that is not a scene."""
    from recon3d.batch import is_pattern
    from recon3d.io.scene import is_scene_folder

    return (is_pattern(str(path)) and not path.exists()) or (path.is_dir() and not is_scene_folder(path))


def _fit_reads(command: str) -> tuple[Callable[[Path], bool], str]:
    """Which entries of a folder or a pattern a fit command reads (by suffix, any case; scenes: folders the
    scene reader takes, transforms jsons), and those words for an error."""
    from recon3d.io.mesh import MESH_EXTENSIONS
    from recon3d.io.pointcloud import POINT_CLOUD_EXTENSIONS
    from recon3d.io.scene import is_scene_folder, is_scene_json

    reads = {"fit-sdf": (POINT_CLOUD_EXTENSIONS, "point clouds"),
             "fit-occupancy": ((*MESH_EXTENSIONS, ".npz"), "meshes and labelled points")}
    suffixes, what = reads.get(command, ((), ""))

    def accepts(path: Path) -> bool:
        if path.is_dir():
            return is_scene_folder(path)
        return path.is_file() and (path.suffix.lower() in suffixes or is_scene_json(path))

    scenes = "scenes (folders with a transforms json or a COLMAP project, transforms*.json)"
    return accepts, f"{command} reads " + (f"{what} ({' '.join(suffixes)}) and " if suffixes else "") + scenes


def _fit_many(command: str, path: Path, output: Path | None, device: str, resume: bool, as_json: bool,
              quiet: bool, force: bool, plot: Path | None, **options: Any) -> None:
    """A fit-* command on many inputs: one checkpoint per input, ``-o DIR/<name>.<kind>.pt``; a finished one
    is skipped and an interrupted one resumed (a rerun goes on where the last stopped), ``--force`` refits
    every input. Under torchrun each rank fits its share of the inputs, each input alone (not data-parallel)."""
    import shlex

    from recon3d import distributed
    from recon3d.batch import finished_checkpoint, interrupted_checkpoint
    from recon3d.device import resolve_device
    from recon3d.fit.presets import check_fit_options
    from recon3d.fit.registry import get_method, method_for
    from recon3d.fit.run import default_output, fit_file, make_options

    if plot is not None:
        raise Recon3dError("--plot: many inputs have no one loss curve; draw one input's with recon3d info "
                           "MODEL.pt --plot loss.png")
    if resume and force:
        raise Recon3dError("--resume with --force: --force refits every input; without it a rerun resumes the "
                           "interrupted ones and skips the finished ones")
    kind = get_method(command).kind
    suffix = f".{kind}.pt"
    accepts, reads = _fit_reads(command)
    torch_device = distributed.rank_device(distributed.ranks_from_env(), resolve_device(device))
    made: dict[str, Any] = {}

    def fit_options(method: Any) -> Any:  # each method's options once; an option it does not take fails its inputs
        if method.name not in made:
            try:
                made[method.name] = make_options(method, **options)
                check_fit_options(made[method.name])
            except Recon3dError as exc:
                made[method.name] = exc
        if isinstance(made[method.name], Recon3dError):
            raise made[method.name]
        return made[method.name]

    def stem(source: Path) -> str:
        try:
            return default_output(method_for(command, source), source).name[:-len(suffix)]
        except Recon3dError:
            return source.stem

    def check(inputs: list[Path]) -> None:  # an option no input's method takes (or out of range): one error
        methods = {method.name: method for method in map(lambda source: method_for(command, source), inputs)}
        errors = []
        for method in methods.values():
            try:
                fit_options(method)
                return
            except Recon3dError as exc:
                errors.append(exc)
        raise errors[0]

    def work(source: Path, out: Path) -> dict[str, Any]:
        method = method_for(command, source)
        resume = not force and interrupted_checkpoint(out, (kind,))
        if resume:
            info(f"{source}: resuming the interrupted {out}")
        summary = fit_file(method, source, fit_options(method), out, torch_device, resume=resume,
                           show_progress=not quiet, inputs=method.input_files(source), force=force)
        if summary["stopped_by"] == "interrupt":
            info(f"interrupted at step {summary['steps']}; resumable checkpoint written to {out}")
            info(f"continue with: recon3d {command} {shlex.quote(str(path))} -o {shlex.quote(str(out.parent))}")
            raise KeyboardInterrupt
        return summary

    _run_many(command, str(path), output, accepts, suffix, work, as_json, quiet, force,
              done=lambda out: finished_checkpoint(out, (kind,)), stem=stem, reads=reads, file_suffixes=(".pt",),
              check=check)


def _run_many(label: str, text: str, output: Path | None, accepts: Callable[[Path], bool], suffix: str,
              work: Callable[[Path, Path], dict[str, Any]], as_json: bool, quiet: bool, force: bool = False,
              done: Callable[[Path], bool] | None = None, stem: Callable[[Path], str] | None = None,
              reads: str = "", file_suffixes: tuple[str, ...] = (), check: Callable[[list[Path]], None] | None = None,
              ) -> None:
    """A command on many inputs (INPUT a folder or a glob pattern; ``accepts`` picks the entries it reads):
    ``work(input, output)`` per input, outputs ``<-o folder>/<name><suffix>`` (recon3d.batch.output_names;
    ``stem(input)`` names them), an output that ``done`` says is complete skipped (default: it exists; none
    with ``force``), a failing input one ``error:`` line and the others go on. stdout: one JSON line per input with
    ``--json``, else each written path; stderr: progress, and a summary line at the end. Under torchrun
    every rank does its share (balanced by size), and rank 0 sums up all ranks. Exit 1 when any input
    failed. ``check(inputs)`` runs before any work (a bad option: one error, nothing done)."""
    from recon3d import batch, distributed
    from recon3d.console import duration
    from recon3d.io.scene import distinct_scenes

    try:
        inputs = distinct_scenes(batch.expand_inputs(text, accepts))  # one fit per scene, not per json of it
    except Recon3dError as exc:
        raise Recon3dError(f"{exc}" + (f"; {reads}" if reads else "")) from None
    if check is not None:
        check(inputs)
    folder = batch.output_folder(output, file_suffixes)
    jobs = list(zip(inputs, batch.output_names(inputs, folder, suffix, stem)))
    ranks = distributed.setup("gloo")  # only the summary goes through the group
    prefix = f"rank {ranks.rank}: " if ranks.distributed else ""

    def on_start(index: int, count: int, source: Path, out: Path) -> None:
        info(f"{prefix}[{index}/{count}] {source} → {out}")

    def on_outcome(outcome: Any) -> None:
        if outcome.status == "failed":
            error_line(outcome.error if outcome.input in outcome.error else f"{outcome.input}: {outcome.error}")
        elif outcome.status == "skipped":
            info(f"{prefix}{outcome.input}: skipped, {outcome.output} is done (--force redoes it)")
        else:
            info(f"{prefix}{outcome.input}: done in {duration(outcome.seconds)}")
        if as_json:
            _emit(outcome.record(), True, None)
        elif outcome.status == "done":
            _emit({}, False, outcome.output, written=outcome.output)

    with distributed.leaving_together():
        if ranks.leader:
            info(f"{label}: {len(jobs)} inputs → {folder}" + (f", shared by {ranks.world} ranks" if ranks.distributed
                                                              else ""))
        start = time.perf_counter()
        skip = (lambda out: False) if force else (done or (lambda out: out.is_file()))
        outcomes = batch.run_batch(jobs, work, skip, on_outcome=on_outcome, on_start=on_start)
        if ranks.leader:
            info(f"{label}: {batch.summary_line(outcomes, time.perf_counter() - start)}")
    if any(outcome.status == "failed" for outcome in outcomes):
        raise typer.Exit(EXIT_ERROR)


def _named(check: Callable[[], Any], option: str) -> None:
    """Run an output check whose messages say ``-o``, naming ``option`` instead."""
    try:
        check()
    except Recon3dError as exc:
        raise Recon3dError(str(exc).replace("-o ", f"{option} ").replace("another -o", f"another {option}")) from None


def _write_plot(plot: Path, checkpoint_path: Path, title: str) -> None:
    from recon3d.io.checkpoint import load_checkpoint
    from recon3d.plots import write_history_plot

    with output_lock(plot):
        write_history_plot(plot, load_checkpoint(checkpoint_path)["train"], title)
    info(f"wrote the loss curve to {plot}")


# ------------------------------------------------------------------------------------------ render


@app.command("render", help=_help(
               "Render held-out views with PSNR and SSIM, or an orbit (PNG frames or a GIF).",
               "A view of 100×100 pixels takes 3-6 s on a busy 2-core CPU (the sample scene); rays go in chunks "
               "that fit in memory (--chunk)."),
             epilog=_example("recon3d render scene.nerf.pt --scene data/scene --json",
                             "recon3d render scene.nerf.pt --scene data/scene -o renders/   # + side by side",
                             "recon3d render scene.nerf.pt --scene data/scene -o orbit/ --orbit 60 --gif"))
@_command
def render_command(
    model: Path = typer.Argument(..., metavar="MODEL",
                                 help="A checkpoint with colours: fit-nerf's, or fit-sdf / fit-occupancy on a scene."),
    scene: Path = typer.Option(..., "--scene", metavar="SCENE",
                               help="The scene folder or transforms json (cameras and reference images)."),
    split: Split = typer.Option("test", "--split", help="Views to render (all: every view of a one-file scene)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", metavar="DIR",
                                          help="Folder for the PNGs: each view, and its ground truth | prediction | "
                                               "depth | normals picture \\[default: no images, metrics only]."),
    side_by_side: bool = typer.Option(True, "--side-by-side/--no-side-by-side",
                                      help="With -o: also write <view>_compare.png, ground truth | prediction | "
                                           "depth | normals (normals from the depth map for fit-nerf models)."),
    orbit: int = typer.Option(0, "--orbit", metavar="N", help="Instead of the split: N frames circling the scene."),
    gif: bool = typer.Option(False, "--gif", help="With --orbit: write one orbit.gif instead of PNG frames."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", help="Render only the first N views."),
    downscale: Optional[int] = typer.Option(None, "--downscale", metavar="K",
                                            help="Image shrink factor \\[default: the training run's]."),
    chunk: Optional[int] = typer.Option(None, "--chunk", metavar="RAYS",
                                        help="Rays rendered at once \\[default: as many as fit in 512 MB on a CPU, "
                                             "2 GB on a GPU]; lower it when memory is short."),
    device: str = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Render held-out views with PSNR and SSIM, or an orbit (PNG frames or a GIF)."""
    from recon3d.io.scene import scene_files
    from recon3d.render.views import RenderOptions, render_model

    options = RenderOptions(split=split, output=output, orbit=orbit, gif=gif, limit=limit, downscale=downscale,
                            side_by_side=side_by_side, chunk=chunk)
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
         f"({result['seconds_per_view']:.2f} s per view)" + (f"; wrote the images to {output}" if output else ""))
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


# ------------------------------------------------------------------------------------------ meshes


@app.command("extract-mesh", epilog=_example("recon3d extract-mesh scan.sdf.pt -o scan.obj",
                                             "recon3d extract-mesh scan.sdf.pt -o scan.ply -o scan.glb --faces 100000 "
                                             "--preview scan.png",
                                             "recon3d extract-mesh scan.sdf.pt -o - --format ply --json > scan.ply"))
@_command
def extract_mesh_command(
    model: Path = typer.Argument(..., metavar="MODEL", help="A recon3d checkpoint (.pt)."),
    outputs: list[Path] = typer.Option(..., "-o", "--output", metavar="MESH",
                                       help="Mesh file (.obj .ply .stl .off .glb), or - for stdout; repeat -o for "
                                            "several formats from one extraction."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", metavar="N",
                                             help="Cells along the longest side \\[default: 512 on a GPU (about 1 s on "
                                                  "an H200), 256 on a CPU (6-11 s on a 2-core CPU)]."),
    level: Optional[float] = typer.Option(None, "--level", metavar="X",
                                          help="Iso-level \\[default: the checkpoint's own]; for occupancy a "
                                               "probability τ in (0, 1), for nerf a density σ."),
    faces: Optional[int] = typer.Option(None, "--faces", metavar="N",
                                        help="At most N faces: quadric decimation (Open3D), watertightness checked "
                                             "\\[default: every face marching cubes makes]."),
    preview: Optional[Path] = typer.Option(None, "--preview", metavar="PNG",
                                           help="Also write a grey picture of the mesh (rendered on the CPU)."),
    fmt: Optional[MeshFormat] = typer.Option(None, "--format", case_sensitive=False,
                                             help="The format for -o - (stdout); given with file names, it "
                                                  "replaces their extensions' format."),
    method: MeshMethod = typer.Option("mise", "--method", help="mise (coarse-to-fine; also sparse) or dense."),
    refine: int = typer.Option(0, "--refine", metavar="N",
                               help="Newton steps moving vertices onto the level along the gradient (0: off)."),
    largest_component: bool = typer.Option(False, "--largest-component", help="Keep only the largest connected piece."),
    keep_unsupported: bool = typer.Option(False, "--keep-unsupported",
                                          help="Keep closed pieces no data supports (dropped by default: those no "
                                               "scan point is near, and cavities sealed inside models fitted from "
                                               "images)."),
    normals: MeshNormals = typer.Option("field", "--normals", help="Vertex normals: field (gradient), mesh, none."),
    marching: Marching = typer.Option("table", "--marching-cubes",
                                      help="table (all cells at once, on the device) or lewiner (scikit-image, CPU)."),
    chunk: int = typer.Option(2**18, "--chunk", metavar="N", help="Points per field evaluation."),
    device: str = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the statistics on stdout (on "
                                                       "stderr when the mesh goes to stdout with -o -)."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Marching cubes at the checkpoint's level: a closed mesh in the input's units."""
    from recon3d.api import extraction_progress
    from recon3d.device import resolve_device
    from recon3d.io.checkpoint import load_checkpoint
    from recon3d.mesh.from_field import MeshOptions, check_empty, mesh_from_checkpoint

    _check_mesh_outputs(outputs, fmt, preview, [model])
    options = MeshOptions(resolution=resolution, level=level, method={"mise": "sparse"}.get(method, method),
                          largest_component=largest_component, normals=normals, chunk=chunk, refine=refine,
                          marching_cubes=marching, keep_unsupported=keep_unsupported, faces=faces)
    options.validate()
    files = [path for path in outputs if str(path) != "-"] + ([preview] if preview is not None else [])
    with contextlib.ExitStack() as stack:
        for path in files:
            stack.enter_context(output_lock(path))
        stack.enter_context(protect_inputs([model]))
        checkpoint = load_checkpoint(model)
        torch_device = resolve_device(device)
        start = time.perf_counter()
        with extraction_progress(enabled=not quiet) as progress:
            mesh, stats = mesh_from_checkpoint(checkpoint, options, torch_device, progress=progress)
            check_empty(mesh, stats, checkpoint, model)  # inside: no "done" line before the error line
        _write_meshes(mesh, stats, outputs, fmt, preview, quiet)
    stats["seconds"]["total_with_write"] = time.perf_counter() - start
    _finish_meshes(stats, {}, outputs, preview, as_json)


def _check_mesh_outputs(outputs: list[Path], fmt: str | None, preview: Path | None, inputs: list[Path]) -> None:
    """extract-mesh's and mesh's -o and --preview, checked before any work."""
    names = [str(path) for path in outputs]
    if names.count("-") > 1:
        raise Recon3dError("-o -: give stdout once")
    if len(set(names)) < len(names):
        raise Recon3dError("-o: the same file is given twice")
    from recon3d.io.mesh import check_mesh_output

    for path in outputs:
        check_output(path, inputs, allow_stdout=True, what="mesh")
        check_mesh_output(path, fmt)
    if preview is not None:
        _named(lambda: check_output(preview, [*inputs, *outputs], suffixes=(".png",), example="mesh.png",
                                    what="preview"), "--preview")
    if "-" in names and _stdout_closed():
        raise Recon3dError("-o -: stdout is closed; give a file name")


def _write_meshes(mesh: Any, stats: dict[str, Any], outputs: list[Path], fmt: str | None, preview: Path | None,
                  quiet: bool) -> None:
    """Say what extraction dropped or decimated, then write every -o (and the preview)."""
    from recon3d.io.mesh import write_mesh

    if stats["dropped_unsupported"]:
        pieces = stats["dropped_unsupported"]
        info(f"dropped {pieces} closed piece{'s' if pieces > 1 else ''} with no scan points near "
             f"{'them' if pieces > 1 else 'it'} (--keep-unsupported keeps {'them' if pieces > 1 else 'it'})")
    if stats.get("dropped_cavities"):
        pieces = stats["dropped_cavities"]
        info(f"dropped {pieces} cavit{'ies' if pieces > 1 else 'y'} sealed inside the solid, which no camera can see "
             f"(--keep-unsupported keeps {'them' if pieces > 1 else 'it'})")
    if "faces_before_decimation" in stats:
        info(f"decimated {stats['faces_before_decimation']:,} → {stats['faces']:,} faces; "
             f"{'still watertight' if stats['watertight'] else 'no longer watertight'}")
    for path in outputs:
        write_mesh(path, mesh, fmt)
    if preview is not None:
        _write_preview(mesh, preview, quiet=quiet)


def _finish_meshes(stats: dict[str, Any], extra: dict[str, Any], outputs: list[Path], preview: Path | None,
                   as_json: bool) -> None:
    """The result line on stderr and the written paths (or --json) on stdout."""
    names = [str(path) for path in outputs]
    written = [name for name in names if name != "-"]
    info(f"{stats['faces']:,} faces, {stats['vertices']:,} vertices at {'x'.join(map(str, stats['resolution']))} "
         f"in {stats['seconds']['total_with_write']:.2f} s" + (f"; wrote {', '.join(written)}" if written else ""))
    summary = {"mesh": names[0], "meshes": names, **extra, **stats}
    if preview is not None:
        summary["preview"] = str(preview)
    if "-" in names:
        _emit(summary, as_json, None, to_stderr=True)
    else:
        _emit(summary, as_json, "\n".join(written), written=", ".join(written))


@app.command("mesh", help=_help(
               "Fit the field an input calls for and extract its mesh, in one process: a point cloud or posed images "
               "→ signed distance (fit-sdf), a mesh or labelled points → occupancy (fit-occupancy).",
               "Takes the options of both steps; no checkpoint is written unless --keep-model names one."),
             epilog=_example("recon3d mesh scan.ply -o scan.obj",
                             "recon3d mesh data/scene -o surface.ply --max-seconds 120 --keep-model surface.pt",
                             "recon3d mesh shape.obj -o watertight.ply --faces 50000"))
@_command
def mesh_command(
    source: Path = typer.Argument(..., metavar="INPUT",
                                  help="Point cloud (PLY, PCD, XYZ/PTS/TXT, OBJ/OFF without faces, NPZ), mesh (OBJ, "
                                       "PLY, STL, OFF, GLB), Occupancy Networks points.npz, or a scene of posed "
                                       "images (a folder or a transforms json)."),
    outputs: Optional[list[Path]] = typer.Option(None, "-o", "--output", metavar="MESH",
                                                 help="Mesh file (.obj .ply .stl .off .glb), or - for stdout; repeat "
                                                      "-o for several formats \\[default: <input name>.mesh.ply]."),
    field: Optional[Literal["sdf", "occupancy"]] = typer.Option(
        None, "--field", help="The field to fit \\[default: sdf for point clouds and scenes, occupancy for meshes "
                              "and labelled points]."),
    preset: str = typer.Option("fast", "--preset", metavar="PRESET",
                               help="The fit's preset: sdf fast, paper, siren, fourier; occupancy fast, paper, "
                                    "fourier, dvr (scenes)."),
    steps: Optional[int] = StepsOpt,
    max_seconds: Optional[float] = MaxSecondsOpt,
    batch: Optional[int] = typer.Option(None, "--batch", metavar="N",
                                        help="Points (scenes: rays) per step \\[default: the preset's]."),
    lr: Optional[float] = LrOpt,
    normals: Optional[NormalsMode] = typer.Option(None, "--normals",
                                                  help="Point clouds: auto (the file's, else estimated), estimate, "
                                                       "ignore \\[default: auto]."),
    denoise: Optional[DenoiseMode] = typer.Option(None, "--denoise", help="Point clouds: auto, on, off "
                                                                          "\\[default: auto]; see fit-sdf."),
    outliers: Optional[OutlierMode] = typer.Option(None, "--outliers", help="Point clouds: drop or keep isolated "
                                                                            "points \\[default: drop]."),
    downscale: Optional[int] = DownscaleOpt,
    white_background: Optional[bool] = BackgroundOpt,
    box: Optional[str] = BoxOpt,
    triangulate: Optional[bool] = TriangulateOpt,
    amp: bool = AmpOpt,
    seed: int = SeedOpt,
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", metavar="N",
                                             help="Cells along the longest side \\[default: 512 on a GPU, 256 on a "
                                                  "CPU]."),
    level: Optional[float] = typer.Option(None, "--level", metavar="X",
                                          help="Iso-level \\[default: 0 for sdf, τ = 0.5 for occupancy]."),
    faces: Optional[int] = typer.Option(None, "--faces", metavar="N", help="At most N faces (quadric decimation)."),
    preview: Optional[Path] = typer.Option(None, "--preview", metavar="PNG",
                                           help="Also write a grey picture of the mesh."),
    fmt: Optional[MeshFormat] = typer.Option(None, "--format", case_sensitive=False,
                                             help="The format for -o - (stdout)."),
    largest_component: bool = typer.Option(False, "--largest-component", help="Keep only the largest connected piece."),
    keep_unsupported: bool = typer.Option(False, "--keep-unsupported",
                                          help="Keep closed pieces no data supports (dropped by default: those no "
                                               "scan point is near, and cavities sealed inside fits from images)."),
    mesh_normals: MeshNormals = typer.Option("field", "--mesh-normals",
                                             help="Vertex normals of the mesh: field (gradient), mesh, none."),
    keep_model: Optional[Path] = typer.Option(None, "--keep-model", metavar="MODEL.pt",
                                              help="Also write the fitted checkpoint (for render, info, another "
                                                   "extraction)."),
    device: str = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object with the fit's and the mesh's "
                                                       "statistics on stdout (on stderr with -o -)."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Fit and extract in one process: a mesh from a point cloud, a mesh, labelled points or posed images."""
    from recon3d.mesh.from_field import MeshOptions

    fit_values = dict(preset=preset, steps=steps, max_seconds=max_seconds, batch=batch, lr=lr, seed=seed, amp=amp,
                      normals=normals, denoise=denoise, outliers=outliers, triangulate=triangulate,
                      **_scene_options(downscale, white_background, box))
    options = MeshOptions(resolution=resolution, level=level, largest_component=largest_component,
                          normals=mesh_normals, keep_unsupported=keep_unsupported, faces=faces, method="sparse")
    options.validate()
    if _many_inputs(source):
        _mesh_many(source, outputs, field, fit_values, options, fmt, preview, keep_model, device, as_json, quiet)
        return
    _mesh_one(source, outputs, field, fit_values, options, fmt, preview, keep_model, device, as_json, quiet)


def _mesh_one(source: Path, outputs: list[Path] | None, field: str | None, fit_values: dict[str, Any], options: Any,
              fmt: str | None, preview: Path | None, keep_model: Path | None, device: str, as_json: bool,
              quiet: bool) -> None:
    """``recon3d mesh`` on one input; under torchrun the fit is data-parallel and rank 0 extracts and writes."""
    from recon3d import distributed
    from recon3d.api import extraction_progress
    from recon3d.console import set_quiet
    from recon3d.device import resolve_device
    from recon3d.fit.registry import method_for
    from recon3d.pipeline import fit_command_for, fit_in_memory, mesh_of

    command = fit_command_for(source, field)
    method = method_for(command, source)
    outputs = outputs or [Path(f"{method.default_stem(source) or 'mesh'}.mesh.ply")]
    inputs = [source, *method.input_files(source)]
    _check_mesh_outputs(outputs, fmt, preview, inputs)
    if keep_model is not None:
        _named(lambda: check_output(keep_model, [*inputs, *outputs], suffixes=(".pt",), example="model.pt",
                                    what="checkpoint"), "--keep-model")
    torch_device = resolve_device(device)
    ranks = distributed.setup("nccl" if torch_device.type == "cuda" else "gloo")
    lead = ranks.leader
    if not lead:
        set_quiet(True)
    files = [path for path in outputs if str(path) != "-"] + [p for p in (preview, keep_model) if p is not None]
    with distributed.leaving_together():
        with contextlib.ExitStack() as stack:
            for path in files if lead else []:
                stack.enter_context(output_lock(path))
            stack.enter_context(protect_inputs(inputs))
            checkpoint, fit = fit_in_memory(source, command, fit_values, distributed.rank_device(ranks, torch_device),
                                            show_progress=not quiet and lead, keep_model=keep_model if lead else None)
            if not lead:
                return
            info(f"{command}: {fit['steps']} steps in {fit['seconds']:.1f} s (stopped by {fit['stopped_by']})")
            start = time.perf_counter()
            with extraction_progress(enabled=not quiet) as progress:
                mesh, stats = mesh_of(checkpoint, source, options, torch_device, progress=progress)
            _write_meshes(mesh, stats, outputs, fmt, preview, quiet)
    stats["seconds"]["total_with_write"] = time.perf_counter() - start
    fit.pop("checkpoint", None)
    extra = {"fit": fit, **({"checkpoint": str(keep_model)} if keep_model is not None else {})}
    _finish_meshes(stats, extra, outputs, preview, as_json)


def _mesh_many(source: Path, outputs: list[Path] | None, field: str | None, fit_values: dict[str, Any], options: Any,
               fmt: str | None, preview: Path | None, keep_model: Path | None, device: str, as_json: bool,
               quiet: bool) -> None:
    """``recon3d mesh`` on a folder or a pattern: ``-o DIR/<name>.<format>`` per input (ply by default), each
    fitted alone; a mesh already there is skipped (a rerun goes on), --force is not needed to redo one:
    delete it. Under torchrun each rank does its share."""
    from recon3d import distributed
    from recon3d.device import resolve_device
    from recon3d.fit.registry import method_for
    from recon3d.io.mesh import MESH_EXTENSIONS, write_mesh
    from recon3d.pipeline import fit_command_for, fit_in_memory, mesh_of

    if preview is not None or keep_model is not None:
        raise Recon3dError(f"{'--preview' if preview is not None else '--keep-model'}: one file for many inputs; "
                           "run recon3d mesh on one input for it")
    if outputs is not None and len(outputs) > 1:
        raise Recon3dError("-o: many inputs take one output folder")
    output = outputs[0] if outputs else None
    (reads_points, points_words), (reads_shapes, shape_words) = _fit_reads("fit-sdf"), _fit_reads("fit-occupancy")
    torch_device = distributed.rank_device(distributed.ranks_from_env(), resolve_device(device))

    def accepts(path: Path) -> bool:  # what fit-sdf or fit-occupancy reads
        return reads_points(path) or reads_shapes(path)

    def work(path: Path, out: Path) -> dict[str, Any]:
        command = fit_command_for(path, field)
        method = method_for(command, path)
        with output_lock(out), protect_inputs([path, *method.input_files(path)]):
            checkpoint, fit = fit_in_memory(path, command, fit_values, torch_device, show_progress=not quiet)
            mesh, stats = mesh_of(checkpoint, path, options, torch_device)
            write_mesh(out, mesh, fmt)
        fit.pop("checkpoint", None)
        return {"fit": fit, "faces": stats["faces"], "vertices": stats["vertices"]}

    reads = f"mesh reads what fit-sdf or fit-occupancy reads: {points_words}; {shape_words}"
    _run_many("mesh", str(source), output, accepts, f".{fmt or 'ply'}", work, as_json, quiet, reads=reads,
              file_suffixes=tuple(MESH_EXTENSIONS))


def _write_preview(mesh: Any, path: Path, size: int = 512, gif: bool = False, frames: int = 36,
                   quiet: bool = False) -> None:
    """A grey picture (or a turntable GIF) of ``mesh`` at ``path``, with progress for the GIF's frames."""
    from recon3d.console import Progress
    from recon3d.meshscene import preview as draw_preview
    from recon3d.meshscene import turntable

    if gif:
        with Progress("preview", frames, "frames", enabled=not quiet) as progress:
            turntable(mesh, path, size=size, frames=frames, progress=lambda done, total: progress.update(done, total))
    else:
        draw_preview(mesh, path, size=size)
    info(f"wrote a preview of the mesh to {path}")


@app.command("preview", help=_help(
               "Draw a mesh as a grey picture (PNG), or a turntable (GIF), on the CPU.",
               "A 512×512 picture takes a few seconds on a 2-core CPU with Open3D's ray caster (about twice as "
               "long with the torch fallback)."),
             epilog=_example("recon3d preview mesh.ply -o mesh.png",
                             "recon3d preview mesh.ply -o mesh.gif --gif --size 320"))
@_command
def preview_command(
    mesh_path: Path = typer.Argument(..., metavar="MESH", help="A mesh (OBJ, PLY, STL, OFF, GLB)."),
    output: Path = typer.Option(..., "-o", "--output", metavar="PICTURE",
                                help="The picture: a .png, or a .gif with --gif."),
    gif: bool = typer.Option(False, "--gif", help="A turntable: the mesh turning once about its up axis, as a GIF."),
    size: int = typer.Option(512, "--size", metavar="PIXELS", help="Width and height of the picture (a GIF frame)."),
    frames: int = typer.Option(36, "--frames", metavar="N", help="With --gif: frames of the turn."),
    up: Literal["x", "y", "z"] = typer.Option("z", "--up", help="The mesh's up axis."),
    threads: Optional[int] = ThreadsOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Draw a mesh as a grey picture (PNG), or a turntable (GIF), on the CPU."""
    from recon3d.io.mesh import read_mesh
    from recon3d.meshscene import preview as draw_preview
    from recon3d.meshscene import turntable

    suffix = ".gif" if gif else ".png"
    check_output(output, [mesh_path], suffixes=(suffix,), example=f"mesh{suffix}", what="picture")
    if not 16 <= size <= 4096:
        raise Recon3dError(f"--size must be between 16 and 4096, got {size}")
    if not 1 <= frames <= 720:
        raise Recon3dError(f"--frames must be between 1 and 720, got {frames}")
    axis = {"x": (1.0, 0.0, 0.0), "y": (0.0, 1.0, 0.0), "z": (0.0, 0.0, 1.0)}[up]
    with output_lock(output), protect_inputs([mesh_path]):
        mesh = read_mesh(mesh_path)
        if mesh.n_faces == 0:
            raise Recon3dError(f"{mesh_path}: has no faces to draw")
        if gif:
            from recon3d.console import Progress

            with Progress("preview", frames, "frames", enabled=not quiet) as progress:
                turntable(mesh, output, size=size, frames=frames, up=axis,
                          progress=lambda done, total: progress.update(done, total))
        else:
            draw_preview(mesh, output, size=size, up=axis)
    info(f"wrote {output}")
    _emit({}, False, str(output), written=str(output))


# ------------------------------------------------------------------------------------------ eval, info


#: eval's distance metrics that are fractions of the reference's bounding-box diagonal.
_RELATIVE = ("chamfer_l1", "hausdorff", "accuracy", "completeness")


@app.command("eval", help=_help(
               "Chamfer-L1/L2, F-score, normal consistency, Hausdorff, watertightness, volume IoU.",
               "Distances (Chamfer, Hausdorff) and F-score thresholds are fractions of the reference's bounding-box "
               "diagonal (``diagonal``, in its units). 200k samples take a few seconds on a CPU."),
             epilog=_example("recon3d eval out.obj reference.ply", "recon3d eval out.obj scan.ply --json"))
@_command
def eval_command(
    pred: Path = typer.Argument(..., metavar="PRED", help="Predicted mesh (or point cloud)."),
    ref: Path = typer.Argument(..., metavar="REF", help="Reference mesh or point cloud."),
    samples: int = typer.Option(200_000, "--samples", metavar="N", help="Surface samples per mesh."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the surface samples."),
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Chamfer-L1/L2, F-score, normal consistency, Hausdorff, watertightness, volume IoU."""
    from recon3d.io.shape import read_shape
    from recon3d.metrics import check_eval_options, evaluate

    check_eval_options(samples, seed)  # before reading: evaluate checks again for library callers
    result = evaluate(read_shape(pred), read_shape(ref), n_samples=samples, seed=seed)
    info(f"distances and F-score thresholds are fractions of the reference's bounding-box diagonal "
         f"({_fmt(result['diagonal'])} units)")
    if as_json:
        _emit({"pred": str(pred), "ref": str(ref), "distance_unit": "fraction of the reference's bounding-box "
               "diagonal", **result}, True, None)
        return
    width = max(len(k) for k in result)
    units = {key: "  (fraction of the diagonal)" for key in _RELATIVE}
    units.update({"chamfer_l2": "  (fraction of the diagonal squared)", "diagonal": "  (the reference's units)",
                  "chamfer_l1_abs": "  (the reference's units)", "hausdorff_abs": "  (the reference's units)"})
    lines = [f"{k:<{width}}  {_fmt(v)}{units.get(k, '')}" for k, v in result.items()]
    _emit({}, False, "\n".join(lines))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@app.command("info", epilog=_example("recon3d info scan.sdf.pt", "recon3d info scan.sdf.pt --history --plot loss.png"))
@_command
def info_command(
    model: Path = typer.Argument(..., metavar="MODEL", help="A recon3d checkpoint (.pt)."),
    history: bool = typer.Option(False, "--history", help="Also print the whole loss history (step, loss, terms)."),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PNG",
                                        help="Write the loss (and PSNR) curve as a PNG."),
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout, the whole history included."),
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """What a checkpoint holds: kind, level, field, units, training record and loss history."""
    from recon3d.fit.describe import describe_checkpoint
    from recon3d.fit.run import history_summary
    from recon3d.io.checkpoint import load_checkpoint

    if plot is not None:
        _check_plot(plot, [model])
    checkpoint = load_checkpoint(model)
    described = describe_checkpoint(checkpoint)
    train = checkpoint["train"]
    summary = history_summary(train) or {}
    if plot is not None:
        _write_plot(plot, model, f"{model.name}")
    if as_json:
        _emit({"checkpoint": str(model), **described, "history": summary,
               "history_terms": train.get("history_terms") or [], "history_rows": train.get("history") or []},
              True, None)
        return
    width = max(len(k) for k in described)
    lines = [f"{k:<{width}}  {_fmt(v)}" for k, v in described.items()]
    if history:
        terms = train.get("history_terms") or ["loss"]
        lines.append("")
        lines.append("  ".join(["step", *terms]))
        lines.extend("  ".join(_fmt(float(v)) for v in row) for row in train["history"])
    _emit({}, False, "\n".join(lines))


# ------------------------------------------------------------------------------------------ trying it out


@app.command("demo", help=_help(
               "End to end on a generated scan: scan → fit-sdf → extract-mesh → eval against the exact shape.",
               "About 2-3 minutes on a 2-core CPU (600 steps at 4096 points, a 256³ extraction)."),
             epilog=_example("recon3d demo -o recon3d-demo", "recon3d demo --steps 200 -r 128   # quicker"))
@_command
def demo_command(
    output: Path = typer.Option(Path("recon3d-demo"), "-o", "--output", metavar="DIR",
                                help="Folder for the demo's files."),
    steps: Optional[int] = typer.Option(None, "--steps", metavar="N",
                                        help="Step budget \\[default: 600 on a CPU, 1000 on a GPU]."),
    resolution: Optional[int] = typer.Option(None, "--resolution", "-r", metavar="N",
                                             help="Extraction resolution \\[default: 256 on a CPU, 512 on a GPU]."),
    force: bool = typer.Option(False, "--force", help="Overwrite the demo's files in an existing folder."),
    device: str = DeviceOpt,
    threads: Optional[int] = ThreadsOpt,
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


@app.command("sample-data", help=_help(
               "Write a sample scan, mesh and scene of posed images to try every command on.",
               "scan.ply (a raw scan of a torus in mm) for fit-sdf, shape.obj (a closed mesh) for fit-occupancy, and "
               "scene/ (40 + 8 views of that shape, 100×100, Blender format, its exact mesh.ply) for fit-nerf, "
               "fit-sdf, fit-occupancy and render. A few seconds on a CPU."),
             epilog=_example("recon3d sample-data -o data",
                             "recon3d fit-sdf data/scan.ply && recon3d fit-nerf data/scene"))
@_command
def sample_data_command(
    output: Path = typer.Option(Path("data"), "-o", "--output", metavar="DIR", help="Folder for the sample files."),
    force: bool = typer.Option(False, "--force", help="Overwrite sample files already in the folder."),
    threads: Optional[int] = ThreadsOpt,
    as_json: bool = JsonOpt,
    quiet: bool = QuietOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Write a sample scan, mesh and scene of posed images to try every command on."""
    from recon3d.samples import write_samples

    paths = write_samples(output, force=force, show_progress=not quiet)
    _emit(paths, as_json, "\n".join(paths[key] for key in ("scan", "mesh", "scene")),
          written=f"the sample files in {output}")


from recon3d.sfm.command import poses_command  # noqa: E402  (light: typer only at import time)

app.command("poses", epilog=_example("recon3d poses photos/ -o scene", "recon3d poses clip.mp4 -o scene --frames 150",
                                     "recon3d poses lego/ -o lego_points --known-poses"))(poses_command)


def main() -> None:
    """Console-script entry point."""
    _reopen_closed_standard_streams()
    try:
        app()
    except SystemExit as exc:  # click ends every standalone run this way
        distributed = sys.modules.get("recon3d.distributed")
        if distributed is not None:  # a rank under torchrun ends here, past torch's teardown
            distributed.exit_if_joined(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1)
        raise


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
