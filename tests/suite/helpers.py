"""Running the suite from inside the suite's own tests: a child pytest with a JUnit report."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVIANT = ROOT / "fixtures" / "deviants" / "agent.py"


def deviant(mode: str, name: str = "deviant") -> str:
    return f"{name}={sys.executable} -I -S {DEVIANT} --mode {mode}"


def run_suite(tmp_path, *args, timeout=300, env=None):
    """Run pytest on the conformance cases in a child process; return (exit code, {test name: outcome}, output)."""
    report = tmp_path / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "--tb=line",
        f"--junitxml={report}",
        "--pcap-dir",
        str(tmp_path / "pcaps"),
        *args,
    ]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {})),
    )
    outcomes = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
            outcomes[case.get("name")] = outcome
    return proc.returncode, outcomes, proc.stdout + proc.stderr
