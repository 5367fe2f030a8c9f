"""Runs one of the ``*_kernel_checks.py`` scripts in a fresh interpreter and returns the JSON of its last line:
with ``interpret`` under Triton's CPU interpreter (TRITON_INTERPRET=1 must be set before Triton is imported,
hence the subprocess), without it compiled (``--compile``: for sm_90 with Triton's bundled compiler)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_checks(script: Path, *args: str, interpret: bool) -> Any:
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    done = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
