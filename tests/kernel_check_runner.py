"""What the ``*_kernel_checks.py`` scripts share: running one in a fresh interpreter (:func:`run_checks`), their
entry (:func:`check_main`: the device asked for, or ``--compile``) and compiling a kernel for sm_90 without a
GPU (:func:`compile_sm90`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def run_checks(script: Path, *args: str, interpret: bool) -> Any:
    """The JSON of the script's last line: with ``interpret`` under Triton's CPU interpreter
    (TRITON_INTERPRET=1 must be set before Triton is imported, hence the subprocess), else compiled."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def device_argument() -> str:
    """``--device D`` from the command line (default cpu, which needs Triton's interpreter)."""
    device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
    assert device != "cpu" or os.environ.get("TRITON_INTERPRET") == "1", "set TRITON_INTERPRET=1 to run on the CPU"
    return device


def check_main(compile_for_hopper: Callable[[], Any], checks: Callable[[str], Any]) -> None:
    """A check script's entry: with ``--compile`` the JSON of its sm_90 compile report, else of its checks on
    the ``--device`` asked for."""
    print(json.dumps(compile_for_hopper() if "--compile" in sys.argv else checks(device_argument())))


def compile_sm90(fn: Any, signature: dict[str, str], constexprs: dict[str, Any], num_warps: int = 4) -> Any:
    """``fn`` compiled to sm_90 machine code with Triton's bundled compiler (no GPU needed): catches what the
    interpreter lets through (constexpr rules, types, inline assembly)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = dict(signature, **{name: "constexpr" for name in constexprs})
    return triton.compile(ASTSource(fn, signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps})
