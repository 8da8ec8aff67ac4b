"""`python -m conformance check-target -- COMMAND`: the protocol self-tests on an agent that is not built in.

Runs tests/suite/test_protocol.py (the ready line, every command of the table,
every proto error code, the rules of targets/PROTOCOL.md) on the agent, both
families, in fresh namespaces, and prints one line per check: what passed,
and for what failed, the first line of what was wrong. Needs root, as the
suite does. The pytest run happens in a child process: this library imports
no pytest.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

from .targets import ROOT

NAME = "checked"


def main(command: list[str], out=print, extra: list[str] = ()) -> int:
    """0 when every check passes, 1 when one fails, 2 when the checks could not run."""
    if not command:
        out("check-target: give the agent's command after --, e.g. check-target -- /path/to/agent --flag")
        return 2
    with tempfile.TemporaryDirectory(prefix="tcc-check-") as tmp:
        junit = os.path.join(tmp, "junit.xml")
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--tb=line",
                f"--junitxml={junit}",
                "--pcap-dir",
                os.path.join(tmp, "pcaps"),
                str(ROOT / "tests" / "suite" / "test_protocol.py"),
                "--targets",
                NAME,
                "--add-target",
                f"{NAME}={shlex.join(command)}",
                "-k",
                NAME,
                *extra,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if not os.path.exists(junit):
            out(f"check-target: the checks could not run (pytest exit {proc.returncode}):")
            out((proc.stdout + proc.stderr).strip()[-3000:])
            return 2
        failed = passed = skipped = 0
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.get("name", "")
            problem = next((c for c in case if c.tag in ("failure", "error")), None)
            skip = next((c for c in case if c.tag == "skipped"), None)
            if problem is not None:
                failed += 1
                text = (problem.get("message") or problem.text or "").strip().splitlines()
                first = re.sub(r"^[A-Za-z_][\w.]*(?:Error|Exception): ", "", text[0]) if text else problem.tag
                out(f"FAIL {name}: {first}")
            elif skip is not None:
                skipped += 1
                out(f"skip {name}: {skip.get('message', '')}")
            else:
                passed += 1
                out(f"ok   {name}")
        out(
            f"{passed} passed, {failed} failed, {skipped} skipped: "
            + ("the agent speaks targets/PROTOCOL.md" if not failed else "see the FAIL lines above")
        )
        return 1 if failed else 0
