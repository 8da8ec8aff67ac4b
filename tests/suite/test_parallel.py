"""Cases are independent: `pytest -n 8` on this 2-core machine gives the same verdicts as a serial run."""

import json

from conformance import compare
from conformance.targets import BUILTIN

from .helpers import run_suite

MISSION = [
    "tests/cases/test_handshake.py",
    "tests/cases/test_refused.py",
    "tests/cases/test_timedout.py",
    "tests/cases/test_queue_full.py",
    "tests/cases/test_time_wait.py",
]


def test_parallel_run_gives_the_serial_verdicts(tmp_path):
    docs = {}
    for mode, extra in (("serial", ["-p", "no:xdist"]), ("parallel", ["-n", "8"])):
        out = tmp_path / mode
        out.mkdir()
        code, outcomes, output = run_suite(
            out, *MISSION, "--families", "v4", *extra, "--results-json", str(out / "r.json")
        )
        docs[mode] = json.loads((out / "r.json").read_text())
        assert len(docs[mode]["results"]) == 7 * len(BUILTIN), output  # 7 mission rows a target
    assert compare.diff(docs["serial"], docs["parallel"]) == []
