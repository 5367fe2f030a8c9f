"""Safe file output: atomic writes, output checks and a per-output lock.

* :func:`atomic_open` writes a temporary sibling ``.NAME.<random>.tmp`` of the output, fsyncs it and moves
  it into place with ``os.replace``, so an interrupted or failed write never leaves a half-written
  file where a good one stood.
* :func:`check_output` refuses, before any long work, an output that is one of the run's inputs (the same
  path, or the same file through a symbolic or hard link), a folder, a FIFO / device / socket, or sits in a
  folder that does not exist or cannot be written.
* :func:`output_lock` keeps two recon3d runs from writing one output at once, and removes temporaries
  that a killed run left behind.

Symbolic links: an output that is a symlink is written *through*: the link's final target is replaced
atomically (the temporary file is made next to the target, then ``os.replace`` onto it) and the link stays
a link. A link to something that is not a regular file (``/dev/stdout``, ``/proc/self/fd/1``, a FIFO, a
device, a folder) is refused; ``-`` is the only way to write to stdout (``extract-mesh``). Replacing a file
with several hard links gives the output name a new file; the other names keep the old content (the
usual result of an atomic write), and none of them may be an input of the run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from recon3d.errors import Recon3dError

#: Files that the atomic writer refuses to replace while :func:`protect_inputs` is active: (st_dev, st_ino).
_PROTECTED: set[tuple[int, int]] = set()
#: Locks this process holds: lock file path -> [fd, depth] (a fit inside ``fit_file`` locks the same output).
_HELD: dict[str, list[int]] = {}
#: tempfile.mkstemp's random part: 8 of ``a-z0-9_``.
_TEMP_RANDOM = r"[a-z0-9_]{8}"


# ------------------------------------------------------------------------------------------------ paths


def resolve_output(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path`` with every symbolic link followed (an absolute path)."""
    return Path(os.path.realpath(os.fspath(path)))


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat(path: str | os.PathLike) -> os.stat_result | None:
    """``os.stat`` (links followed), or None when there is nothing there (or a dangling link)."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Recon3dError(f"{path}: too many levels of symbolic links") from exc
        return None


def _same_file(output: Path, out_stat: os.stat_result | None, candidate: Path) -> bool:
    """Whether writing ``output`` would replace ``candidate`` (same inode, or the same resolved path)."""
    in_stat = _stat(candidate)
    if out_stat is not None and in_stat is not None:
        return (out_stat.st_dev, out_stat.st_ino) == (in_stat.st_dev, in_stat.st_ino)
    return resolve_output(output) == resolve_output(candidate)


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), *,
                 suffixes: tuple[str, ...] | None = None, example: str | None = None,
                 allow_stdout: bool = False, what: str = "output") -> Path:
    """Check, before any long work, that ``path`` may be written; return the file a write replaces.

    One :class:`Recon3dError` for the first problem: ``-`` unless ``allow_stdout``; an existing folder,
    FIFO, device or socket (also behind a symlink); one of ``inputs`` (the same path, or the same file
    through a symbolic or hard link); a name not ending in one of ``suffixes`` (``example`` is the name
    suggested instead); a folder that does not exist or may not be written into. ``what`` names the
    output in messages ("checkpoint", "mesh").
    """
    text = os.fspath(path)
    if text == "-":
        if allow_stdout:
            return Path("-")
        raise Recon3dError(f"-o -: the {what} is a file, not a stream; give a file name"
                           + (f" such as {example}" if example else ""))
    out = Path(text)
    out_stat = _stat(out)
    if out_stat is not None and not stat.S_ISREG(out_stat.st_mode):
        link = " (through a symbolic link)" if out.is_symlink() else ""
        hint = ""
        if stat.S_ISDIR(out_stat.st_mode) and example:
            hint = f"; give a file name such as {out / example}"
        elif allow_stdout and not stat.S_ISDIR(out_stat.st_mode):
            hint = "; use -o - to write to stdout"
        raise Recon3dError(f"{out}: is {_kind(out_stat.st_mode)}{link}; the {what} must be a regular file{hint}")
    for candidate in inputs:
        candidate = Path(candidate)
        if _same_file(out, out_stat, candidate):
            same = os.path.normpath(text) == os.path.normpath(candidate)
            what_it_is = "is an input of this run" if same else f"is the same file as the input {candidate} (a link)"
            raise Recon3dError(f"{out}: {what_it_is}; recon3d never overwrites its inputs: choose another -o")
    if suffixes is not None and out.suffix.lower() not in suffixes:
        raise Recon3dError(f"{out}: the {what} must end in {' or '.join(suffixes)}"
                           + (f" (for example -o {out.with_name(example)})" if example else ""))
    target = resolve_output(out)
    folder = target.parent
    shown = folder if out.is_symlink() else out.parent  # the folder as the user named it, unless behind a link
    if not folder.is_dir():
        raise Recon3dError(f"{out}: output folder {shown} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Recon3dError(f"{out}: output folder {shown} is not writable")
    return target


@contextlib.contextmanager
def protect_inputs(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """While active, :func:`atomic_open` refuses to replace any of ``paths`` (existing files, compared by
    inode): a last line of defence behind :func:`check_output` for outputs named during the run."""
    added = set()
    for path in paths:
        st = _stat(path)
        if st is not None and stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in _PROTECTED:
            added.add((st.st_dev, st.st_ino))
    _PROTECTED.update(added)
    try:
        yield
    finally:
        _PROTECTED.difference_update(added)


# ------------------------------------------------------------------------------------------------ lock


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output: ``.NAME.lock`` next to the file a write replaces."""
    target = resolve_output(path)
    return target.with_name(f".{target.name}.lock")


def temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files of :func:`atomic_open` for this output (``.NAME.<random>.tmp`` next to its target)."""
    target = resolve_output(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{_TEMP_RANDOM}\.tmp")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return []
    return [Path(e.path) for e in entries if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)]


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the advisory lock of output ``path`` (``fcntl.flock`` on ``.NAME.lock`` next to it) for the block.

    A second recon3d run writing the same output is refused at once with one error line naming the
    holder's pid. The lock goes with the process (also when it is killed); the lock file is removed when the
    block ends. Under the lock, temporaries that a killed run left for this output are removed: no live
    writer of this output can own them. Re-entrant within one process. Without ``fcntl`` (Windows), or on a
    file system without locks, the block runs unlocked.
    """
    lock = lock_path(path)
    key = str(lock)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(path, lock)
    if fd is None:
        yield
        return
    _HELD[key] = [fd, 1]
    try:
        _remove_stale_temporaries(path)
        yield
    finally:
        del _HELD[key]
        _release(lock, fd)


def _acquire(path: str | os.PathLike, lock: Path) -> int | None:
    """Open and flock the lock file; the fd, None when locking is not available, or one clear error."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks
        return None
    for _ in range(10):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise Recon3dError(f"{path}: cannot write here ({_reason(exc)})") from exc
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Recon3dError(f"{path}: its lock file {lock} is not a regular file; remove it")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            pid = f" (pid {holder})" if holder else ""
            raise Recon3dError(f"another recon3d run is writing {path}{pid}; wait for it or choose another -o"
                               ) from None
        except OSError:  # no locks on this file system (some network mounts): go on unlocked
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # the holder before us may have removed the file between our open and our flock: then we hold a
        # lock on an orphan, and must lock the file that is there now
        now = _stat_nofollow(lock)
        if now is not None and (now.st_dev, now.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
            _write_pid(fd)
            return fd
        os.close(fd)
    raise Recon3dError(f"{path}: could not take the lock {lock} (it keeps changing); retry")


def _stat_nofollow(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except (OSError, ValueError):
        return None


def _write_pid(fd: int) -> None:
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_nlink == 1:  # never truncate a file that has another name
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file (still ours: we hold the lock) and unlock."""
    with contextlib.suppress(OSError):
        now = os.lstat(lock)
        mine = os.fstat(fd)
        if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            os.unlink(lock)
    os.close(fd)


def _remove_stale_temporaries(path: str | os.PathLike) -> None:
    for stale in temporaries(path):
        with contextlib.suppress(OSError):
            stale.unlink()


# ------------------------------------------------------------------------------------------------ write


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; move it into place on success.

    A symlink ``path`` is written through (its final target is replaced; see the module docstring); a
    ``path`` that is a folder, FIFO, device or socket, or an input protected by :func:`protect_inputs`, is
    refused. A replaced file keeps its permission bits; a new one gets the usual ``0o666 & ~umask``. On any
    exception the temporary file is removed and the previous ``path`` (if any) is kept.
    """
    path = Path(path)
    target = resolve_output(path)
    folder = target.parent
    if not folder.exists():
        raise Recon3dError(f"{path}: output folder {folder} does not exist")
    existing = _stat(target)
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise Recon3dError(f"{path}: is {_kind(existing.st_mode)}; only a regular file can be written here")
    if existing is not None and (existing.st_dev, existing.st_ino) in _PROTECTED:
        raise Recon3dError(f"{path}: is an input of this run; recon3d never overwrites its inputs")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise Recon3dError(f"{path}: cannot write here ({_reason(exc)})") from exc
    try:
        with os.fdopen(fd, mode) as handle:
            _set_mode(handle.fileno(), existing)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise Recon3dError(f"{path}: write failed ({_reason(exc)})") from exc
        raise


def _set_mode(fd: int, existing: os.stat_result | None) -> None:
    """Give the temporary (mkstemp makes it 0o600) the replaced file's permission bits, else the usual
    ``0o666 & ~umask`` of a new file. Best effort: some file systems have no permission bits."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.fchmod (Windows)
        os.fchmod(fd, stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask())


def _umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    return f"{reason}: the disk is full" if exc.errno == errno.ENOSPC else reason


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as strict JSON: NaN and infinities become null (JSON has no such numbers), arrays and
    tensors lists, anything else unknown its ``str``."""
    return json.dumps(_plain(value), indent=indent, allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, type(None))):  # bool is an int
        return value
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return _plain(value.tolist())
    return str(value)
