#!/usr/bin/env python3
"""Flakiness budget: run the whole suite N times in a row under a CPU hog and report verdict flips.

    python3 ci/flakiness.py                  # 20 runs, hog on every core, pytest -n 8
    python3 ci/flakiness.py --runs 5 -- -k refused

A CPU-bound process per core (ours, ended by PID at the end) competes with the
suite the whole time. Each run writes a JUnit report; a test whose outcome is
not the same in every run is a flip. Exit 1 when anything flipped. 0 is the bar.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOG = "import signal, os\nsignal.signal(signal.SIGTERM, lambda *a: os._exit(0))\nwhile True: pass\n"


def outcomes(junit: Path) -> dict:
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {c.tag for c in case}
        verdict = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
        out[f"{case.get('classname')}::{case.get('name')}"] = verdict
    return out


def _sigterm(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument("--workers", default="8", help="pytest-xdist workers (default 8)")
    parser.add_argument("--hogs", type=int, default=os.cpu_count(), help="CPU hogs (default: one per core)")
    parser.add_argument("--out", default=None, help="where the JUnit reports go (default: a new private folder)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="tcc-flakiness-"))  # private (0700): never a path others know
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    print(f"JUnit reports in {out}", flush=True)
    # The hogs die with this script even if it is killed outright (PR_SET_PDEATHSIG), and
    # SIGTERM ends it through the same cleanup as Ctrl-C.
    signal.signal(signal.SIGTERM, _sigterm)
    hogs = [subprocess.Popen(["setpriv", "--pdeathsig", "KILL", sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    runs, times = [], []
    try:
        for i in range(1, args.runs + 1):
            junit = out / f"run{i:02d}.xml"
            start = time.monotonic()
            proc = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-n",
                    args.workers,
                    f"--junitxml={junit}",
                    *args.pytest_args,
                ],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=1800,
            )
            times.append(time.monotonic() - start)
            runs.append(outcomes(junit) if junit.exists() else {})
            failed = sorted(k for k, v in runs[-1].items() if v == "failed")
            print(
                f"run {i}/{args.runs}: exit {proc.returncode}, {len(runs[-1])} tests, "
                f"{len(failed)} failed, {times[-1]:.1f} s" + (f": {', '.join(failed)}" if failed else ""),
                flush=True,
            )
    finally:
        for hog in hogs:
            hog.send_signal(signal.SIGTERM)
        for hog in hogs:
            hog.wait()
    names = sorted(set().union(*runs))
    flips = {n: [r.get(n, "missing") for r in runs] for n in names if len({r.get(n, "missing") for r in runs}) > 1}
    for name, seq in flips.items():
        print(f"FLIP {name}: {' '.join(seq)}")
    print(
        f"{len(flips)} flip(s) in {len(runs)} runs of {len(names)} tests under {args.hogs} CPU hog(s); "
        f"run time min {min(times):.1f} s, max {max(times):.1f} s"
    )
    return 1 if flips else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        print(f"flakiness: interrupted ({e or 'Ctrl-C'}); CPU hogs stopped", file=sys.stderr)
        sys.exit(130)
