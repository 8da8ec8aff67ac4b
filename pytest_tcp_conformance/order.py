"""Longest cases first: a run's wall time follows its slowest cases, not the order pytest found them in.

Most cases spend their time waiting on TCP timers (a SYN retransmission, a tbf hold); with
pytest-xdist's load scheduling, a case of several seconds that starts last makes the run's tail.
So the items are ordered by how long each took when the durations were last stored, longest
first: `tests/durations.json`, committed (a fresh clone, a CI run, orders well from the start;
pytest's own cache is off in this project, `-p no:cacheprovider`, so nothing is written into the
checkout unasked); `--store-durations` rewrites it from the run that ends. Only the conformance cases are kept; the
suite's own tests, with no duration on record, take the median and keep pytest's order among them.

An item with no duration on record takes the mean of the same test function's others (a new
target runs the same cases), else the median of all. The order is the same on every xdist worker,
which load scheduling requires: the controller reads the durations once and hands them to every
worker (another run in the same checkout may rewrite the cache meanwhile). Only the order changes: each case
still runs alone in fresh namespaces, and the verdicts are those of any other order.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

COMMITTED = Path(__file__).resolve().parent.parent / "tests" / "durations.json"
CASES = "tests/cases/"  # whose durations are kept (the suite's own tests keep pytest's order among them)


def addoption(group) -> None:
    group.addoption(
        "--store-durations",
        action="store_true",
        help=f"write this run's case durations to {COMMITTED.relative_to(COMMITTED.parent.parent)} "
        "(the longest-first order of a fresh checkout)",
    )


def _read_file(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


def known_durations() -> dict[str, float]:
    return _read_file(COMMITTED)


def longest_first(items: list, known: dict[str, float]) -> None:
    """Sort items in place, longest expected first (a stable sort: ties keep pytest's order)."""
    if len(items) < 2 or not known:
        return
    by_function: dict[str, list[float]] = {}
    for nodeid, seconds in known.items():
        by_function.setdefault(nodeid.split("[")[0], []).append(seconds)
    fallback = statistics.median(known.values())

    def expected(item) -> float:
        if item.nodeid in known:
            return known[item.nodeid]
        same = by_function.get(item.nodeid.split("[")[0])
        return statistics.fmean(same) if same else fallback

    items.sort(key=expected, reverse=True)


class DurationRecorder:
    """On the controller, with --store-durations: each case's setup + call + teardown, stored for the next runs."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        # Only the conformance cases: the suite's own heaviest tests each run pytest themselves, and
        # started together first they made the whole run slower (393 s against 317-334 s, measured).
        if report.nodeid.startswith(CASES):
            self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        if self.seconds:
            stored = _read_file(COMMITTED)
            stored.update({k: round(v, 3) for k, v in self.seconds.items()})
            tmp = COMMITTED.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(dict(sorted(stored.items())), indent=0) + "\n")
            os.replace(tmp, COMMITTED)
