"""The command's process: the GPU context started beside torch's import, and the end without the
interpreter's teardown (recon3d.process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from recon3d.process import device_argument, exit_status, gpu_ordinal, warm_gpu


def test_the_gpu_a_command_line_will_use(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert gpu_ordinal(["fit-sdf", "scan.ply"]) == 0
    assert gpu_ordinal(["extract-mesh", "m.pt", "--device", "cuda:2", "-o", "m.ply"]) == 2
    assert gpu_ordinal(["render", "m.pt", "--device=cuda"]) == 0
    assert gpu_ordinal(["fit-nerf", "lego", "--device", "cuda:1", "--device", "cpu"]) is None  # the last wins
    assert gpu_ordinal(["fit-sdf", "scan.ply", "--device", "CPU"]) is None
    assert gpu_ordinal(["fit-sdf", "scan.ply", "--device", "cuda:x"]) is None  # the command says what is wrong
    assert gpu_ordinal(["info", "m.pt"]) is None
    assert gpu_ordinal(["poses", "photos"]) is None
    assert gpu_ordinal([]) is None
    assert device_argument(["--device"]) == "auto"  # no value: the command's own error
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert gpu_ordinal(["fit-sdf", "scan.ply"]) is None  # a torchrun rank picks its own device


def test_warming_a_gpu_where_there_is_none_does_nothing_harmful(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert warm_gpu(gpu_ordinal(["info", "m.pt"])) is None
    thread = warm_gpu(gpu_ordinal(["fit-sdf", "scan.ply"]))
    if thread is not None:  # Linux: the thread runs and ends, with a driver or without one
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_exit_status_follows_python():
    assert exit_status(None) == 0
    assert exit_status(3) == 3
    assert exit_status("a message") == 1


END = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path
    from recon3d.process import end_process
    folder = Path(sys.argv[1])
    atexit.register(lambda: (folder / "atexit").write_text("ran"))
    def late():
        time.sleep(0.3)
        (folder / "thread").write_text("done")
    threading.Thread(target=late).start()
    sys.stdout.write("x" * 1_000_000 + "\\nend\\n")  # buffered: must reach the pipe
    sys.stderr.write("to stderr\\n")
    end_process(7)
    (folder / "after").write_text("should not run")
""")


@pytest.mark.parametrize("quick", ["1", "0"])
def test_the_end_keeps_what_a_normal_exit_does(tmp_path, quick):
    env = {**os.environ, "RECON3D_QUICK_EXIT": quick}
    done = subprocess.run([sys.executable, "-c", END, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 7
    assert done.stdout.endswith("x\nend\n") and len(done.stdout) == 1_000_005
    assert done.stderr == "to stderr\n"
    assert (tmp_path / "atexit").read_text() == "ran"  # atexit handlers (temporary folders, logging) ran
    assert (tmp_path / "thread").read_text() == "done"  # a non-daemon thread was waited for
    assert not (tmp_path / "after").exists()


def test_a_command_ends_quickly_with_its_status_and_output(tmp_path):
    """The whole console entry: results on stdout, the error line and status of a failing command."""
    model = tmp_path / "nothing.pt"
    model.write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "recon3d", "info", str(model)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and done.stdout == ""
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


def test_blas_warmup_without_a_gpu_ends_quietly(monkeypatch):
    import threading

    from recon3d.device import join_warmups, start_blas_warmup

    raised = []
    monkeypatch.setattr(threading, "excepthook", lambda args: raised.append(args))
    threads = [start_blas_warmup(ordinal) for ordinal in (0, 7)]
    assert all(thread.daemon for thread in threads)
    join_warmups()  # what a CUDA graph capture waits for
    assert not any(thread.is_alive() for thread in threads)
    assert raised == []
