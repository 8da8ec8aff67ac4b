"""Running the suite from inside the suite's own tests: a child pytest with a JUnit report."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEVIANT = ROOT / "fixtures" / "deviants" / "agent.py"


def child_env(extra: dict | None = None) -> dict:
    """The environment of a child pytest or conformance run.

    Bytecode, and pytest's rewritten test modules, go to the private folder the plugin chose for this
    process (pytest_tcp_conformance: sys.pycache_prefix) instead of not being written at all: the suite
    starts a child pytest more than a hundred times, and each would otherwise compile and rewrite every
    module again (about 0.6 s of CPU a start, measured). Where the plugin chose none, nothing is written."""
    env = dict(os.environ, **(extra or {}))
    if sys.pycache_prefix:
        env["PYTHONPYCACHEPREFIX"] = sys.pycache_prefix
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def deviant(mode: str, name: str = "deviant") -> str:
    return f"{name}={sys.executable} -I -S {DEVIANT} --mode {mode}"


# pytest as a child process of a test, in the checkout: quiet, writing no cache folder.
PYTEST = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]


def run_suite(tmp_path, *args, timeout=300, env=None):
    """Run pytest on the conformance cases in a child process; return (exit code, {test name: outcome}, output)."""
    report = tmp_path / "junit.xml"
    cmd = [
        *PYTEST,
        # pytest's unraisable-exception check runs the garbage collector several times at the end of
        # every session: about 0.4 s of CPU a child run (measured), and the suite starts many
        "-p",
        "no:unraisableexception",
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
        env=child_env(env),
    )
    outcomes = {}
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            outcome = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
            outcomes[case.get("name")] = outcome
    return proc.returncode, outcomes, proc.stdout + proc.stderr
