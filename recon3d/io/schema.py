"""The checkpoint schema: what a recon3d checkpoint may hold, checked before any network is built.

A checkpoint is untrusted input. :func:`check_archive` reads the zip's central directory before
``torch.load`` and refuses archives that declare more bytes than a limit, or entries that inflate
like a zip bomb (a few MB of deflated zeros can declare gigabytes). :func:`validate_checkpoint` then
checks every key the commands read: kinds, types, finite numbers, sizes within limits, and a
``state_dict`` whose names, shapes and dtypes are exactly those of the network its ``field`` config
builds. That network is built with its large tensors on the meta device (:func:`meta_network`),
which allocates nothing, so a 3 KB file declaring a 12 GB hash grid costs nothing to refuse. Every
violation is one :class:`~recon3d.errors.InputError` line ``FILE: KEY: problem``, with values shown
in a few words (never a long repr).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from recon3d.errors import InputError, one_line
from recon3d.fields import FIELDS, build_field
from recon3d.fields.radiance import _ACTIVATIONS as DENSITY_ACTIVATIONS

FORMAT = "recon3d"
REQUIRED_KEYS = ("format", "version", "kind", "level", "field", "state_dict", "to_world", "bounds", "train")
#: The most uncompressed bytes a checkpoint archive may declare (a hash-grid NeRF with its optimiser
#: state is a few hundred MB); also never more than the memory available.
MAX_CHECKPOINT_BYTES = 4 << 30
#: Entries of the archive: one per tensor storage (a few hundred in a resumable checkpoint).
MAX_ARCHIVE_ENTRIES = 100_000
#: torch.save stores entries uncompressed; a compressed entry that inflates more than this many times
#: over (and past 64 MB) is a zip bomb, not a re-zipped checkpoint of float weights.
MAX_INFLATION, INFLATION_FLOOR = 100, 64 << 20
#: Parameters (state_dict elements) a field config may imply: 2^28 float32 values = 1 GiB.
MAX_PARAMETERS = 1 << 28
#: Network sizes a field config may ask for.
MAX_HIDDEN, MAX_LAYERS = 4096, 64
#: Magnitude of coordinates (bounds, boxes, translations): far beyond any scene, well inside float32
#: once multiplied by the scales the renderers and the mesher use.
MAX_COORDINATE = 1e12
#: |level| of a field's surface; an occupancy level is a logit, whose sigmoid must stay finite.
MAX_LEVEL = {"occupancy": 100.0}
DEFAULT_MAX_LEVEL = 1e9

_NUMBER = (int, float)


class Invalid(Exception):
    """One schema violation: the key (dotted path) and what is wrong with it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


# ------------------------------------------------------------------------------------ memory


def available_memory() -> int | None:
    """Bytes of memory this process can still get without swapping: Linux ``MemAvailable``, lowered to
    a cgroup (container) limit when one applies; None where neither is known."""
    found = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    if found is None:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            left = max(int(limit) - used, 0)
            found = left if found is None else min(found, left)
    return found


def gigabytes(n_bytes: float) -> str:
    """``n_bytes`` in GB (MB, kB for less), for messages."""
    if n_bytes >= 1e9:
        return f"{n_bytes / 1e9:.1f} GB"
    return f"{n_bytes / 1e6:.0f} MB" if n_bytes >= 1e6 else f"{n_bytes / 1e3:.0f} kB"


# ------------------------------------------------------------------------------------ archive


#: File signatures (first bytes) and extensions of what users give instead of a checkpoint.
_SIGNATURES = ((b"ply", "a PLY file (a mesh or point cloud)"), (b"glTF", "a GLB mesh"), (b"OFF", "an OFF mesh"),
               (b"solid", "an STL mesh"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"),
               (b"# .PCD", "a PCD point cloud"), (b"{", "a JSON file"))
_EXTENSIONS = {".obj": "an OBJ mesh", ".stl": "an STL mesh", ".off": "an OFF mesh", ".ply": "a PLY file",
               ".glb": "a GLB mesh", ".xyz": "a point cloud", ".pts": "a point cloud", ".txt": "a text file",
               ".pcd": "a PCD point cloud", ".npz": "a NumPy archive", ".json": "a JSON file"}


def looks_like(path: Path) -> str | None:
    """What a file that is not a checkpoint seems to be (a mesh, a point cloud, an image…), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    for signature, what in _SIGNATURES:
        if head.startswith(signature):
            return what
    return _EXTENSIONS.get(Path(path).suffix.lower())


def check_archive(path: Path) -> None:
    """Refuse, before loading, a file that is not a torch zip archive or that declares too much data.

    torch's reader inflates every entry to the size the central directory declares, so the sum of
    those sizes bounds what loading can allocate; it must stay under :data:`MAX_CHECKPOINT_BYTES`
    and the memory available.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        what = looks_like(path)
        if what is not None:
            raise InputError(f"{path}: not a recon3d checkpoint but {what}; give the .pt file that fit-sdf, "
                             "fit-occupancy or fit-nerf wrote") from exc
        raise InputError(f"{path}: not a recon3d checkpoint (not a torch zip archive: truncated, or another "
                         f"kind of file); refused to load it") from exc
    if len(entries) > MAX_ARCHIVE_ENTRIES:
        raise InputError(f"{path}: the archive has {len(entries):,} entries, more than a checkpoint holds "
                         f"({MAX_ARCHIVE_ENTRIES:,}); refused to load it")
    declared = sum(max(int(info.file_size), 0) for info in entries)
    if declared > MAX_CHECKPOINT_BYTES:
        raise InputError(f"{path}: declares {gigabytes(declared)} of data once unpacked, more than a checkpoint "
                         f"may ({gigabytes(MAX_CHECKPOINT_BYTES)}); refused to load it")
    for info in entries:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > INFLATION_FLOOR \
                and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
            raise InputError(f"{path}: entry {info.filename[-40:]!r} inflates {gigabytes(info.compress_size)} to "
                             f"{gigabytes(info.file_size)}, as a zip bomb does; refused to load it")
    free = available_memory()
    if free is not None and declared > free:
        raise InputError(f"{path}: declares {gigabytes(declared)} of data once unpacked, more than the "
                         f"{gigabytes(free)} of memory available")


# ------------------------------------------------------------------------------------ values


def short(value: Any) -> str:
    """A few words for a value in a message: never a long repr."""
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int) and value.bit_length() > 64:  # repr() of a 5000-digit int raises
        number = _as_float(value)
        return "a huge integer" if number is None else f"{number:.3g}"
    if isinstance(value, (int, float)):
        return f"{value:.6g}" if isinstance(value, float) else repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 32 else repr(value[:29]) + "..."
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, dict):
        return f"a dict of {len(value)} keys"
    return f"a {type(value).__name__}"


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return None


def real(key: str, value: Any, lo: float | None = None, hi: float | None = None, *,
         above: float | None = None) -> float:
    """A finite int or float (not a bool, not a string) within [lo, hi] and > ``above``."""
    number = _as_float(value) if isinstance(value, _NUMBER) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number):
        raise Invalid(key, f"must be a finite number, got {short(value)}")
    if above is not None and number <= above:
        raise Invalid(key, f"must be greater than {above:g}, got {short(value)}")
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise Invalid(key, f"must be between {lo:g} and {hi:g}, got {short(value)}")
    if lo is not None and number < lo:
        raise Invalid(key, f"must be at least {lo:g}, got {short(value)}")
    if hi is not None and number > hi:
        raise Invalid(key, f"must be at most {hi:g}, got {short(value)}")
    return number


def integer(key: str, value: Any, lo: int, hi: int) -> int:
    """An int (not a bool, not a float) within [lo, hi]."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(key, f"must be an integer, got {short(value)}")
    if not lo <= value <= hi:
        raise Invalid(key, f"must be between {lo:,} and {hi:,}, got {short(value)}")
    return value


def choice(key: str, value: Any, known: Any, what: str = "value") -> str:
    if not isinstance(value, str) or value not in known:
        raise Invalid(key, f"unknown {what} {short(value)} (known: {', '.join(known)})")
    return value


def mapping(key: str, value: Any) -> dict:
    """A dict whose keys are strings."""
    if not isinstance(value, dict):
        raise Invalid(key, f"must be a dict, got {short(value)}")
    odd = next((k for k in value if not isinstance(k, str)), None)
    if odd is not None:
        raise Invalid(key, f"has a key that is not a string ({short(odd)})")
    return value


def flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(key, f"must be true or false, got {short(value)}")
    return value


def text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(key, f"must be a string, got {short(value)}")
    return value


def strings(key: str, value: Any) -> list:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise Invalid(key, f"must be a list of strings, got {short(value)}")
    return list(value)


def integers(key: str, value: Any, lo: int, hi: int, max_len: int = 64) -> list[int]:
    if not isinstance(value, (list, tuple)) or len(value) > max_len:
        raise Invalid(key, f"must be a list of at most {max_len} integers, got {short(value)}")
    return [integer(f"{key}[{i}]", v, lo, hi) for i, v in enumerate(value)]


def numbers(key: str, value: Any, length: int) -> list[float]:
    """``length`` finite numbers (a list, a tuple or a 1-D float tensor), each within ±MAX_COORDINATE."""
    if isinstance(value, torch.Tensor):
        if value.shape != (length,) or not (value.is_floating_point() or value.dtype == torch.int64):
            raise Invalid(key, f"must be {length} numbers, got {short(value)}")
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise Invalid(key, f"must be {length} numbers, got {short(value)}")
    return [real(f"{key}[{i}]", v, -MAX_COORDINATE, MAX_COORDINATE) for i, v in enumerate(value)]


def box(key: str, value: Any) -> list[list[float]]:
    """[[xmin, ymin, zmin], [xmax, ymax, zmax]] finite, max > min on every axis (also in float32)."""
    if isinstance(value, torch.Tensor):
        if value.shape != (2, 3) or not value.is_floating_point():
            raise Invalid(key, f"must be 2x3 numbers (min and max corners), got {short(value)}")
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise Invalid(key, f"must be 2x3 numbers (min and max corners), got {short(value)}")
    lo, hi = (numbers(f"{key}[{i}]", row, 3) for i, row in enumerate(value))
    thin = [axis for axis in range(3)
            if not hi[axis] - lo[axis] > 1e-6 * max(1.0, abs(lo[axis]), abs(hi[axis]))]
    if thin:
        raise Invalid(key, f"is empty or flat along {'xyz'[thin[0]]} (max must exceed min), got "
                           f"{lo[thin[0]]:.6g} to {hi[thin[0]]:.6g}")
    return [lo, hi]


def finite_tensor(key: str, tensor: torch.Tensor) -> None:
    """A dense tensor without NaN or infinity (checked in slices, to bound the extra memory)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise Invalid(key, f"must be a dense tensor, got a {tensor.layout} one")
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    flat = tensor.reshape(-1)
    step = 1 << 22
    for start in range(0, flat.numel(), step):
        if not bool(torch.isfinite(flat[start:start + step]).all()):
            raise Invalid(key, "holds NaN or infinite values")


def tensor_like(key: str, value: Any, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A finite dense tensor of exactly ``shape`` and ``dtype`` (shape first: a crafted stride-0 tensor
    may declare any size)."""
    if not isinstance(value, torch.Tensor):
        raise Invalid(key, f"must be a tensor, got {short(value)}")
    if tuple(value.shape) != tuple(shape):
        raise Invalid(key, f"has shape {tuple(value.shape)}, expected {tuple(shape)}")
    if value.dtype != dtype:
        raise Invalid(key, f"is {str(value.dtype).replace('torch.', '')}, expected {str(dtype).replace('torch.', '')}")
    finite_tensor(key, value)
    return value


# ------------------------------------------------------------------------------------ networks


class _MetaFactories(TorchFunctionMode):
    """Large tensors without memory: a tensor factory (empty, zeros, randn, …, as nn.Linear and the
    encodings call them) asked for more than :data:`SMALL` elements and no device makes a meta tensor
    (shape and dtype only), and in-place operations on meta tensors (initialisers such as normal_)
    return them untouched, since only shapes matter here (and torch's meta kernels for some of them
    cost seconds of imports). Small tensors and ``torch.tensor`` of given data stay real, so
    constructors may still compute with their small buffers and arguments."""

    SMALL = 1 << 16
    FACTORIES = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn, torch.randint,
                           torch.empty_strided, torch.normal})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func in self.FACTORIES and kwargs.get("device") is None and _numel(func, args, kwargs) > self.SMALL:
            kwargs["device"] = torch.device("meta")
        else:
            target = args[0] if args else kwargs.get("tensor", kwargs.get("input"))  # nn.init passes tensor=
            if isinstance(target, torch.Tensor) and target.is_meta:
                name = getattr(func, "__name__", "")
                if name == "__setitem__":
                    return None
                if name.endswith("_") and not name.startswith("__"):
                    return target
        return func(*args, **kwargs)


def _numel(func, args: tuple, kwargs: dict) -> int:
    """Elements a factory call asks for (its size arguments), or a large number when they are unclear."""
    if func in (torch.full, torch.randint, torch.normal):
        size = kwargs.get("size", next((a for a in args if isinstance(a, (tuple, list, torch.Size))), None))
    else:
        size = kwargs.get("size", args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size))
                          else args)
    try:
        return math.prod(int(n) for n in size)
    except (TypeError, ValueError):
        return 1 << 62


def meta_network(build) -> nn.Module:
    """``build()`` with parameters and large buffers on the meta device (nothing allocated)."""
    with _MetaFactories():
        return build()


#: What each encoding type's config may hold: key -> ("int" | "real", lo, hi) or ("bool",).
ENCODINGS: dict[str, dict[str, tuple]] = {
    "none": {"in_dim": ("int", 3, 3)},
    "frequency": {"in_dim": ("int", 3, 3), "n_frequencies": ("int", 0, 64), "include_input": ("bool",)},
    "fourier": {"in_dim": ("int", 3, 3), "n_features": ("int", 1, 4 * MAX_HIDDEN), "sigma": ("real", -1e6, 1e6),
                "seed": ("int", 0, (1 << 64) - 1), "include_input": ("bool",)},
    "hashgrid": {"in_dim": ("int", 3, 3), "n_levels": ("int", 1, 32), "n_features": ("int", 1, 8),
                 "log2_table_size": ("int", 1, 24), "base_resolution": ("real", 1, 1 << 16),
                 "max_resolution": ("real", 1, 1 << 16), "init_scale": ("real", 0, 1e3)},
    "sh": {"in_dim": ("int", 3, 3), "degree": ("int", 1, 4)},
}
MLP_KEYS: dict[str, tuple] = {
    "hidden": ("int", 1, MAX_HIDDEN), "n_layers": ("int", 1, MAX_LAYERS),
    "activation": ("choice", ("relu", "softplus", "sine")), "skip_layers": ("ints", 0, MAX_LAYERS),
    "init": ("choice", ("default", "geometric", "siren")), "init_radius": ("real", -1e3, 1e3),
    "softplus_beta": ("real", 1e-6, 1e6), "w0": ("real", -1e6, 1e6), "first_w0": ("real", -1e6, 1e6),
    "geometric_inputs": ("int", 0, 3),
}
RADIANCE_MLP_KEYS = {
    "density_mlp": {"hidden": ("int", 1, MAX_HIDDEN), "n_layers": ("int", 1, MAX_LAYERS),
                    "skips": ("ints", 0, MAX_LAYERS)},
    "color_mlp": {"hidden": ("int", 1, MAX_HIDDEN), "n_layers": ("int", 1, MAX_LAYERS)},
}


def check_keys(key: str, config: Any, rules: dict[str, tuple], required: tuple[str, ...] = (),
               accepted: tuple[str, ...] = ()) -> dict:
    """``config`` a dict whose keys are in ``rules`` (each value checked by its rule) or in ``accepted``
    (keys a constructor takes that have no rule here: small plain data, see :func:`plain`)."""
    config = mapping(key, config)
    unknown = [k for k in config if k not in rules and k not in accepted]
    if unknown:
        known = ", ".join(dict.fromkeys([*rules, *accepted]))
        raise Invalid(f"{key}.{unknown[0][:40]}", f"unexpected key (known: {known})")
    missing = [k for k in required if k not in config]
    if missing:
        raise Invalid(key, f"lacks {missing[0]!r}")
    for name, value in config.items():
        where = f"{key}.{name}"
        rule = rules.get(name, ("plain",))
        if rule[0] == "int":
            integer(where, value, rule[1], rule[2])
        elif rule[0] == "real":
            real(where, value, rule[1], rule[2])
        elif rule[0] == "bool":
            flag(where, value)
        elif rule[0] == "choice":
            choice(where, value, rule[1], name)
        elif rule[0] == "ints":
            integers(where, value, rule[1], rule[2])
        elif rule[0] == "plain":
            plain(where, value)
    return config


def check_encoding(key: str, config: Any) -> None:
    """An encoding config: a type recon3d.fields builds, keys its class takes, sizes within limits."""
    config = mapping(key, config)
    kind = config.get("type", "none")
    cls = _encoding_class(f"{key}.type", kind)
    accepted = _constructor_keys(cls) + (("in_dim",) if kind == "hashgrid" else ())
    check_keys(key, {k: v for k, v in config.items() if k != "type"}, ENCODINGS.get(kind, {}), accepted=accepted)


_ENCODING_CLASSES: dict[str, type] = {}


def _encoding_class(key: str, kind: Any) -> type:
    """The class recon3d.fields.encodings.build_encoding makes for ``kind`` (found by building it with
    its default sizes, large tensors on the meta device; types the schema has no rules for included)."""
    if not isinstance(kind, str):
        raise Invalid(key, f"must be an encoding type name, got {short(kind)}")
    if kind not in _ENCODING_CLASSES:
        from recon3d.fields.encodings import build_encoding

        try:
            _ENCODING_CLASSES[kind] = type(meta_network(lambda: build_encoding({"type": kind})))
        except ValueError as exc:
            raise Invalid(key, one_line(str(exc))[:160]) from None
    return _ENCODING_CLASSES[kind]


def check_level(key: str, value: Any, kind: str) -> float:
    limit = MAX_LEVEL.get(kind, DEFAULT_MAX_LEVEL)
    return real(key, value, -limit, limit)


def check_field_config(kind: str, config: Any) -> None:
    """The ``field`` config of a ``kind`` field: keys its class takes, known types, sizes within limits.

    Keys with a rule here are checked by it; other keys the field's constructor takes are left to the
    meta-device build (:func:`expected_state`), whose parameter count bounds their sizes."""
    config = mapping("field", config)
    accepted = _constructor_keys(FIELDS[kind])
    if kind == "nerf":
        required = ("architecture", "aabb", "position_encoding", "direction_encoding", "density_mlp",
                    "geo_features", "color_mlp")
        _known_keys("field", config, accepted, required, kind)
        choice("field.architecture", config["architecture"], ("paper", "fast"), "architecture")
        box("field.aabb", config["aabb"])
        check_encoding("field.position_encoding", config["position_encoding"])
        check_encoding("field.direction_encoding", config["direction_encoding"])
        for name, rules in RADIANCE_MLP_KEYS.items():
            check_keys(f"field.{name}", config[name], rules, required=("hidden", "n_layers"))
        integer("field.geo_features", config["geo_features"], 1, MAX_HIDDEN)
        if "density_activation" in config:
            choice("field.density_activation", config["density_activation"], DENSITY_ACTIVATIONS, "activation")
        if "density_bias" in config:
            real("field.density_bias", config["density_bias"], -1e6, 1e6)
    else:
        _known_keys("field", config, accepted, ("encoding", "mlp"), kind)
        check_encoding("field.encoding", config["encoding"])
        check_keys("field.mlp", config["mlp"], MLP_KEYS, accepted=_mlp_keys())
        if config.get("appearance") is not None:  # the colour network of fields fitted to images
            plain("field.appearance", mapping("field.appearance", config["appearance"]))
        if config.get("variance_init") is not None:
            real("field.variance_init", config["variance_init"], -1e3, 1e3)
    if "level" in config:
        check_level("field.level", config["level"], kind)
    if "inside" in config:
        choice("field.inside", config["inside"], ("below", "above"), "side")


def plain(key: str, value: Any, depth: int = 0) -> None:
    """Small plain data for a constructor this schema has no rules for: nested at most 4 deep, every
    number finite and every integer at most MAX_HIDDEN * 16 (no loop of a billion layers)."""
    if depth > 4:
        raise Invalid(key, "is nested too deeply")
    if isinstance(value, dict):
        for name, item in mapping(key, value).items():
            plain(f"{key}.{name[:40]}", item, depth + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > 64:
            raise Invalid(key, f"must be a short list, got {short(value)}")
        for i, item in enumerate(value):
            plain(f"{key}[{i}]", item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        integer(key, value, -MAX_HIDDEN * 16, MAX_HIDDEN * 16)
    elif isinstance(value, float):
        real(key, value)
    elif not isinstance(value, (str, bool)) and value is not None:
        raise Invalid(key, f"must be plain data, got {short(value)}")


def _mlp_keys() -> tuple[str, ...]:
    """The keyword arguments of recon3d.fields.mlp.MLP a config may set (its input and output widths
    come from the field)."""
    from recon3d.fields.mlp import MLP

    return tuple(k for k in _constructor_keys(MLP) if k not in ("in_dim", "out_dim"))


def _constructor_keys(cls: type) -> tuple[str, ...]:
    """The keyword arguments a field class's constructor takes (its config keys)."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in parameters if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _known_keys(key: str, config: dict, known: tuple[str, ...], required: tuple[str, ...], kind: str) -> None:
    unknown = [k for k in config if k not in known]
    if unknown:
        raise Invalid(f"{key}.{unknown[0][:40]}", f"unexpected key for a {kind} field (known: {', '.join(known)})")
    missing = [k for k in required if k not in config]
    if missing:
        raise Invalid(key, f"lacks {missing[0]!r}, which a {kind} field needs")


def expected_state(kind: str, config: dict) -> dict[str, torch.Tensor]:
    """The state_dict (meta tensors: names, shapes, dtypes) of the network ``config`` builds."""
    check_field_config(kind, config)
    try:
        network = meta_network(lambda: build_field(kind, config))
    except Exception as exc:  # noqa: BLE001 - the constructor's complaint about this config, as one line
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise Invalid("field", f"does not describe a {kind} network ({reason})") from None
    state = network.state_dict()
    count = sum(t.numel() for t in state.values())
    if count > MAX_PARAMETERS:
        raise Invalid("field", f"describes a network of {count:,} parameters, more than recon3d loads "
                               f"({MAX_PARAMETERS:,}); refused before allocating it")
    return state


def check_state_dict(key: str, state: Any, expected: dict[str, torch.Tensor]) -> None:
    """Names, shapes and dtypes exactly as ``expected``; floats finite."""
    state = mapping(key, state)
    missing = [name for name in expected if name not in state]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise Invalid(key, f"lacks {missing[0][:60]!r}{more}, which the field config needs")
    unexpected = [name for name in state if name not in expected]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise Invalid(key, f"has {unexpected[0][:60]!r}{more}, which the field config does not have")
    for name, meta in expected.items():
        tensor_like(f"{key}[{name!r}]", state[name], tuple(meta.shape), meta.dtype)


# ------------------------------------------------------------------------------------ checkpoint


def check_to_world(value: Any) -> None:
    check_keys("to_world", value, {"scale": ("skip",), "translation": ("skip",)}, required=("scale", "translation"))
    real("to_world.scale", value["scale"], 0.0, MAX_COORDINATE, above=0.0)
    numbers("to_world.translation", value["translation"], 3)


def check_history(key: str, rows: Any) -> None:
    if not isinstance(rows, list):
        raise Invalid(key, f"must be a list of rows of numbers, got {short(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or not 2 <= len(row) <= 64:
            raise Invalid(f"{key}[{i}]", f"must be a row of 2 to 64 numbers (step, loss, …), got {short(row)}")
        for j, v in enumerate(row):
            if not isinstance(v, _NUMBER) or isinstance(v, bool) or _as_float(v) is None:
                raise Invalid(f"{key}[{i}][{j}]", f"must be a number, got {short(v)}")


#: Keys of ``train`` that commands read, with their rules (other keys are records shown by ``info``).
TRAIN_KEYS: dict[str, tuple] = {
    "method": ("text",), "steps": ("int", 0, 1 << 62), "seconds": ("real", 0.0, 1e12),
    "complete": ("bool",), "stopped_by": ("text",), "device": ("text",), "history_terms": ("strings",),
    "downscale": ("int", 1, 1024), "images": ("int", 0, 1 << 62), "points": ("int", 0, 1 << 62),
}


def check_train(train: Any) -> dict:
    train = mapping("train", train)
    for name, rule in TRAIN_KEYS.items():
        if name not in train:
            continue
        value, where = train[name], f"train.{name}"
        if rule[0] == "text":
            text(where, value)
        elif rule[0] == "strings":
            strings(where, value)
        elif rule[0] == "bool":
            flag(where, value)
        elif rule[0] == "int":
            integer(where, value, rule[1], rule[2])
        else:
            real(where, value, rule[1], rule[2])
    if "history" in train:
        check_history("train.history", train["history"])
    if "background" in train:
        for i, v in enumerate(numbers("train.background", train["background"], 3)):
            if not 0.0 <= v <= 1.0:
                raise Invalid(f"train.background[{i}]", f"must be between 0 and 1, got {short(v)}")
    if "versions" in train:
        mapping("train.versions", train["versions"])
    if "config" in train:
        config = mapping("train.config", train["config"])
        if "settings" in config:
            mapping("train.config.settings", config["settings"])
    return train


def check_support(value: Any) -> None:
    """fit-sdf's support picture: ``points`` (M, 3) and ``radius`` (M,) finite float tensors."""
    check_keys("support", value, {"points": ("skip",), "radius": ("skip",)}, required=("points", "radius"))
    points, radius = value["points"], value["radius"]
    for name, tensor, ndim in (("points", points, 2), ("radius", radius, 1)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.dim() != ndim:
            raise Invalid(f"support.{name}", f"must be a {ndim}-D float tensor, got {short(tensor)}")
    if points.shape[1:] != (3,) or radius.shape != points.shape[:1]:
        raise Invalid("support", f"points {tuple(points.shape)} and radius {tuple(radius.shape)} must be (M, 3) "
                                 "and (M,)")
    finite_tensor("support.points", points)
    finite_tensor("support.radius", radius)
    if points.numel() and bool((points.abs() > MAX_COORDINATE).any()):
        raise Invalid("support.points", f"has coordinates beyond {MAX_COORDINATE:g}")


def check_resume(resume: Any, train: dict, network: dict[str, torch.Tensor]) -> None:
    """An interrupted run's state: optimiser state shaped like the field's parameters, the RNG state,
    progress and the run config ``--resume`` continues with."""
    resume = mapping("resume", resume)
    for name in ("optimizer", "generator", "step", "seconds", "history"):
        if name not in resume:
            raise Invalid("resume", f"lacks {name!r}")
    integer("resume.step", resume["step"], 0, 1 << 62)
    real("resume.seconds", resume["seconds"], 0.0, 1e12)
    check_history("resume.history", resume["history"])
    if "terms" in resume:
        strings("resume.terms", resume["terms"])
    generator = resume["generator"]
    if not isinstance(generator, torch.Tensor) or generator.dtype != torch.uint8 or generator.dim() != 1 \
            or generator.numel() not in _generator_state_sizes():
        raise Invalid("resume.generator", f"is not a random generator state, got {short(generator)}")
    if not isinstance(train.get("config"), dict) or not isinstance(train["config"].get("settings"), dict):
        raise Invalid("train.config.settings", "missing: a resumable checkpoint records its run settings")
    _check_optimizer(resume["optimizer"], [tuple(t.shape) for t in network.values()])


def _generator_state_sizes() -> tuple[int, ...]:
    """Bytes of a CPU generator's state, and of a CUDA one's (seed and offset)."""
    return (int(torch.Generator().get_state().numel()), 16)


def _check_optimizer(state: Any, shapes: list[tuple[int, ...]]) -> None:
    """Adam's state_dict: parameter groups numbering at most the field's tensors, per-parameter state
    whose moment tensors have the shapes of the field's tensors."""
    state = mapping("resume.optimizer", state)
    groups, per_param = state.get("param_groups"), state.get("state")
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise Invalid("resume.optimizer.param_groups", f"must be a list of dicts, got {short(groups)}")
    if not isinstance(per_param, dict):
        raise Invalid("resume.optimizer.state", f"must be a dict, got {short(per_param)}")
    ids = []
    for i, group in enumerate(groups):
        ids += integers(f"resume.optimizer.param_groups[{i}].params", group.get("params"), 0, 1 << 30,
                        max_len=len(shapes))
        for name, value in group.items():
            if name != "params" and isinstance(value, float) and not math.isfinite(value):
                raise Invalid(f"resume.optimizer.param_groups[{i}].{name[:40]}", "is not finite")
    if len(ids) != len(set(ids)) or len(ids) > len(shapes):
        raise Invalid("resume.optimizer.param_groups", f"name {len(ids)} parameters; the field has {len(shapes)}")
    remaining = sorted(shapes)
    for index, moments in per_param.items():
        if index not in ids:
            raise Invalid("resume.optimizer.state", f"has state for parameter {short(index)}, which no group has")
        moments = mapping(f"resume.optimizer.state[{index}]", moments)
        shape = None
        for name, tensor in moments.items():
            where = f"resume.optimizer.state[{index}].{name[:40]}"
            if not isinstance(tensor, torch.Tensor):
                raise Invalid(where, f"must be a tensor, got {short(tensor)}")
            if tensor.dim() == 0:
                finite_tensor(where, tensor)
                continue
            if shape is not None and tuple(tensor.shape) != shape:
                raise Invalid(where, f"has shape {tuple(tensor.shape)}, its companion {shape}")
            shape = tuple(tensor.shape)
            if shape not in remaining:
                raise Invalid(where, f"has shape {shape}, which no parameter of the field has")
            finite_tensor(where, tensor)
        if shape is not None:
            remaining.remove(shape)


def validate_checkpoint(data: Any, path: Path, version: int, kinds: tuple[str, ...]) -> dict:
    """Check a loaded checkpoint against the schema (see the module docstring); returns it.

    Checks run cheapest and most telling first: format, version, kind (and whether the command takes
    it), then the field config (on the meta device), the tensors, placement and records.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{path}: not a recon3d checkpoint")
    found = data.get("version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise InputError(f"{path}: version: must be an integer from 1 to {version}, got {short(found)}")
    if found > version:
        raise InputError(f"{path}: checkpoint format version {short(found)} is newer than this recon3d "
                         f"understands ({version}); upgrade recon3d")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {', '.join(missing)}")
    try:
        kind = choice("kind", data["kind"], tuple(FIELDS), "field kind")
        if kind not in kinds:
            raise InputError(f"{path}: holds a {kind} field; this command needs {' or '.join(kinds)}")
        check_level("level", data["level"], kind)
        if "inside" in data:
            choice("inside", data["inside"], ("below", "above"), "side")
        expected = expected_state(kind, data["field"])
        check_state_dict("state_dict", data["state_dict"], expected)
        check_to_world(data["to_world"])
        bounds = box("bounds", data["bounds"])
        scale = float(data["to_world"]["scale"])
        shift = numbers("to_world.translation", data["to_world"]["translation"], 3)
        world = [v * scale + shift[i] for row in bounds for i, v in enumerate(row)]
        if not all(math.isfinite(v) and abs(v) <= 1e30 for v in world):
            raise Invalid("to_world", "maps the bounds beyond the float range")
        train = check_train(data["train"])
        if "support" in data:
            check_support(data["support"])
        if "resume" in data:
            check_resume(data["resume"], train, expected)
    except Invalid as exc:
        raise InputError(one_line(f"{path}: {exc.key}: {exc.problem}")) from None
    return data

