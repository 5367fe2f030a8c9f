"""Hostile and odd inputs, run as a user would: every case of ``benchmarks/hostile/*.py`` as a
``recon3d`` subprocess on the CPU, with its exit code, stderr, wall time and peak memory.

    python benchmarks/reliability.py --out /tmp/reliability [--only NAME,...] [--json-out FILE]

A case ends cleanly when it matches its expectation: an expected error is exactly one ``error: …``
line on stderr with exit code 1 (no traceback, no "internal error"); an expected success exits 0.
Prints one table: case, expected, exit, clean, seconds, peak MB, the error line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import hostile  # noqa: E402
from benchmarks.hostile.case import Case  # noqa: E402


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for module in pkgutil.iter_modules(hostile.__path__):
        if module.name != "case":
            cases += importlib.import_module(f"benchmarks.hostile.{module.name}").CASES
    return cases


#: Runs its arguments as one child and prints the child's peak resident memory (kB) as a last stderr line.
_MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
            "print('peak-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(code)")


def run_case(case: Case, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    argv = [str(a) for a in case.build(work)]
    command = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "recon3d.cli", *argv]
    start = time.perf_counter()
    proc = None
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=case.timeout, cwd=work)
        code, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired:
        code, stderr = None, f"timed out after {case.timeout:g} s"
    seconds = time.perf_counter() - start
    peak = 0
    if stderr.rstrip().splitlines()[-1:] and stderr.rstrip().splitlines()[-1].startswith("peak-kb "):
        peak = int(stderr.rstrip().splitlines()[-1].split()[1])
        stderr = "\n".join(stderr.rstrip().splitlines()[:-1])
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    error_clean = code == 1 and len(lines) == 1 and "internal error" not in stderr and "Traceback" not in stderr
    clean = {"error": error_clean, "ok": code == 0, "either": code == 0 or error_clean}[case.expect]
    problem = case.check(work, proc) if case.check is not None and proc is not None else None
    return {"case": case.name, "expect": case.expect, "exit": code, "clean": clean and problem is None,
            "problem": problem, "seconds": round(seconds, 2), "peak_mb": round(peak / 1024, 1),
            "bounded": case.bounded, "error": lines[0] if lines else stderr.strip().splitlines()[-1:] or ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (one subfolder per case)")
    parser.add_argument("--only", default=None, help="comma-separated case names")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    rows = []
    for index, case in enumerate(all_cases()):
        if only and case.name not in only:
            continue
        row = run_case(case, args.out / f"{index:03d}")
        rows.append(row)
        print(f"{'ok ' if row['clean'] else 'BAD'} {row['case']}: exit {row['exit']}, {row['seconds']} s, "
              f"{row['peak_mb']} MB", file=sys.stderr, flush=True)
    print("| case | expected | exit | clean | seconds | peak MB | message |\n|---|---|---|---|---|---|---|")
    for r in rows:
        message = str(r["problem"] or r["error"]).replace("|", "/")[:110]
        print(f"| {r['case']} | {r['expect']} | {r['exit']} | {'yes' if r['clean'] else 'NO'} | {r['seconds']} | "
              f"{r['peak_mb']} | {message} |")
    print(f"\n{sum(r['clean'] for r in rows)} of {len(rows)} cases ended cleanly")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
