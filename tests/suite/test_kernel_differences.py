"""Declared kernel differences: `compare --declared kernel-differences.toml` passes the differences the file
declares, and fails on one it does not, and on one it declares that is gone."""

import json
import subprocess
import sys

import pytest

from conformance import compare, results

from .helpers import ROOT

DECLARED = ROOT / "kernel-differences.toml"
HOST, OLD = "6.18.44-fc-v782", "6.1.176"


def doc(kernel, syns=3, queue="q=2"):
    """A results file of the five behaviours on one kernel: timedout gives up after `syns` SYNs."""
    cells = [("handshake v4", t, "pass", "q=1 recvq=18") for t in ("python", "c", "go", "rust")]
    cells += [("timedout v4", t, "pass", f"ETIMEDOUT {syns}SYN") for t in ("python", "c", "go")]
    cells += [("timedout v4", "rust", "skip", "rust: no TCP_SYNCNT"), ("queue_full v4", "c", "pass", queue)]
    return {
        "schema": results.SCHEMA,
        "version": results.VERSION,
        "kernel": kernel,
        "kernel_version": kernel,
        "profile": "linux-default",
        "sysctls": {},
        "targets": {},
        "results": [
            {"case": c, "test": "test_" + c.split()[0], "family": "v4", "target": t, "verdict": v, "key": k}
            for c, t, v, k in cells
        ],
    }


def write(tmp_path, a, b) -> list[str]:
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, d in zip(paths, (a, b), strict=True):
        p.write_text(json.dumps(d))
    return [str(p) for p in paths]


def run(tmp_path, a, b, declared=DECLARED):
    """compare's exit code and its lines."""
    lines = []
    code = compare.main(*write(tmp_path, a, b), out=lines.append, declared=str(declared))
    return code, lines


def test_the_repository_file_declares_cases_that_exist():
    entries = compare.load_declared(str(DECLARED))
    assert entries, "kernel-differences.toml declares the known 6.1 difference"
    cases = {p.stem for p in (ROOT / "tests" / "cases").glob("test_*.py")}
    source = "\n".join((ROOT / "tests" / "cases" / f"{c}.py").read_text() for c in cases)
    for e in entries:
        name = e.case.split()[0]
        assert f"def {name if name.startswith('test_') else 'test_' + name}(" in source, e


def test_a_declared_kernel_difference_passes_either_way_round(tmp_path):
    for a, b in ((doc(HOST), doc(OLD, syns=2)), (doc(OLD, syns=2), doc(HOST))):
        code, lines = run(tmp_path, a, b)
        assert code == 0, "\n".join(lines)
        rows = [line for line in lines if line.startswith("timedout v4")]
        assert len(rows) == 3 and all("#1 (kernel <6.5)" in r for r in rows), rows
        assert lines[-1].endswith(": 3 declared in " + str(DECLARED) + ", 0 undeclared, 0 declared but gone")
        assert any(line.startswith("declared #1: timedout, kernel <6.5: with TCP_SYNCNT=1") for line in lines)


def test_an_undeclared_difference_fails(tmp_path):
    code, lines = run(tmp_path, doc(HOST), doc(OLD, syns=2, queue="q=3"))
    assert code == 1
    assert any(line.startswith("queue_full v4") and line.endswith("  NO") for line in lines), lines
    assert "1 undeclared" in lines[-1]
    # The declared value on the old kernel, but not the one declared on the other side: not declared.
    code, lines = run(tmp_path, doc(HOST, syns=4), doc(OLD, syns=2))
    assert code == 1 and "3 undeclared" in lines[-1]
    # The same kernel range on both sides: the entry does not apply, the difference is not declared.
    code, lines = run(tmp_path, doc("6.12.117"), doc(OLD, syns=2))
    assert code == 0
    code, lines = run(tmp_path, doc("6.0.1", syns=3), doc(OLD, syns=2))
    assert code == 1 and "3 undeclared" in lines[-1]


def test_a_declared_difference_that_is_gone_fails(tmp_path):
    code, lines = run(tmp_path, doc(HOST), doc(OLD, syns=3))
    assert code == 1
    assert any(line.startswith("declared but not seen") and "#1 (timedout, kernel <6.5)" in line for line in lines)
    # No cell of the case in one of the runs (another selection): the entry does not apply.
    b = doc(OLD)
    b["results"] = [r for r in b["results"] if not r["case"].startswith("timedout")]
    code, lines = run(tmp_path, doc(HOST), b)
    assert not any(line.startswith("declared but not seen") for line in lines)
    assert code == 1 and "4 undeclared" in lines[-1]  # cells missing on one side are undeclared differences


def test_the_declared_file_is_checked(tmp_path):
    bad = tmp_path / "bad.toml"
    for text, said in (
        ('[[difference]]\ncase = "timedout"\nkernel = "<6.5"\nreason = "r"\n', "#1: `cell`"),
        ('[[difference]]\ncase = "t"\nkernel = "six"\ncell = "c"\nreason = "r"\n', "is not a version range"),
        ('[[difference]]\ncase = "t"\nkernel = "<6"\ncell = "c"\nreason = "r"\nwhen = 1\n', "unknown key(s) ['when']"),
        ('[[difference]]\ncase = "t"\nkernel = "<6"\ncell = "c"\nreason = "r"\nfamilies = ["v5"]\n', "families"),
        ("[[kernel]]\n", "unknown top-level"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=r"bad\.toml") as e:
            compare.load_declared(str(bad))
        assert said in str(e.value)


def test_the_command_line_takes_the_declared_file(tmp_path):
    cli = [sys.executable, "-m", "conformance", "compare", *write(tmp_path, doc(HOST), doc(OLD, syns=2))]
    plain = subprocess.run(cli, cwd=ROOT, capture_output=True, text=True)
    assert plain.returncode == 1, plain.stdout + plain.stderr
    declared = subprocess.run([*cli, "--declared", str(DECLARED)], cwd=ROOT, capture_output=True, text=True)
    assert declared.returncode == 0, declared.stdout + declared.stderr
    assert "3 declared in" in declared.stdout
    (tmp_path / "bad.toml").write_text("[[difference]]\n")
    bad = subprocess.run([*cli, "--declared", str(tmp_path / "bad.toml")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "bad.toml" in bad.stderr
