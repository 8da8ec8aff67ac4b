"""`python -m conformance bench [PYTEST ARGS]`: how long a selection takes, and where the time goes.

A benchmark, not a test: nothing passes or fails on a time. It runs pytest on the
selection in a child process (as a user would) with a results file in a private
folder, and prints from that one run: wall time, CPU time (user and system of
every process the run started: pytest, its workers, agents), the sum of the
cases' own durations, the slowest case, the protocol's own waits where a case
records one (`protocol_wait_s`: a SYN retransmission schedule, a queue's
delay), pytest's start (a --collect-only run of the same selection), and the
ratios wall / slowest case and CPU per case. Timings on a shared or loaded
machine are noisy: compare ratios, and runs made in one session.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from .targets import ROOT


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run(argv: list[str]) -> tuple[float, float, int]:
    cpu0, t0 = _children_cpu(), time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0, _children_cpu() - cpu0, proc.returncode


def measure(pytest_args: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="tcc-bench-") as tmp:
        results = os.path.join(tmp, "r.json")
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        start_wall, start_cpu, _ = _run([*base, "--collect-only", *pytest_args])
        wall, cpu, code = _run(
            [*base, "--pcap-dir", os.path.join(tmp, "pcaps"), "--results-json", results, *pytest_args]
        )
        with open(results) as f:
            records = json.load(f)["results"]
    durations = sorted(((r["duration_s"], r["id"]) for r in records), reverse=True)
    waits = [float(r["observed"]["protocol_wait_s"]) for r in records if "protocol_wait_s" in r["observed"]]
    slowest = durations[0] if durations else (0.0, "-")
    return {
        "args": " ".join(pytest_args),
        "exit": code,
        "cases": len(records),
        "wall_s": wall,
        "cpu_s": cpu,
        "sum_case_s": sum(d for d, _ in durations),
        "slowest_s": slowest[0],
        "slowest": slowest[1],
        "protocol_wait_s": sum(waits),
        "protocol_waits": len(waits),
        "start_s": start_wall,
        "start_cpu_s": start_cpu,
        "wall_per_slowest": wall / slowest[0] if slowest[0] else 0.0,
        "cpu_per_case_ms": 1000 * cpu / len(records) if records else 0.0,
    }


def report(m: dict, out=print) -> None:
    out(f"selection           {m['args'] or '(all)'}  (pytest exit {m['exit']})")
    out(f"cases               {m['cases']}")
    out(f"wall                {m['wall_s']:8.2f} s")
    out(f"CPU                 {m['cpu_s']:8.2f} s   ({m['cpu_per_case_ms']:.0f} ms a case)")
    out(f"sum of cases        {m['sum_case_s']:8.2f} s   (setup + call + teardown of each)")
    out(f"slowest case        {m['slowest_s']:8.2f} s   {m['slowest']}")
    out(f"protocol waits      {m['protocol_wait_s']:8.2f} s   (in {m['protocol_waits']} cases that record one)")
    out(f"pytest start        {m['start_s']:8.2f} s   ({m['start_cpu_s']:.2f} s CPU; a --collect-only run)")
    out(f"wall / slowest case {m['wall_per_slowest']:8.2f}")


def main(pytest_args: list[str], out=print) -> int:
    m = measure(pytest_args)
    report(m, out)
    return 0 if m["cases"] else 2
