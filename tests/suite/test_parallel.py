"""Cases are independent: cases in flight (the default: forked children, several at once) and
`pytest -n 8` on this 2-core machine give the same verdicts as a serial run."""

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
    modes = {
        "serial": ["-p", "no:xdist", "--in-flight", "1"],
        "in-flight": ["-p", "no:xdist"],  # the default: --in-flight auto
        "xdist": ["-n", "8"],
    }
    for mode, extra in modes.items():
        out = tmp_path / mode
        out.mkdir()
        code, outcomes, output = run_suite(
            out, *MISSION, "--families", "v4", *extra, "--results-json", str(out / "r.json")
        )
        docs[mode] = json.loads((out / "r.json").read_text())
        assert len(docs[mode]["results"]) == 7 * len(BUILTIN), output  # 7 mission rows a target
    assert compare.diff(docs["serial"], docs["in-flight"]) == []
    assert compare.diff(docs["serial"], docs["xdist"]) == []
