"""The pipeline material in ci/ is well-formed and runs what the README says."""

import json
import os
import re
import subprocess

import yaml

from conformance.targets import BUILTIN

from .helpers import ROOT


def test_github_workflow_structure():
    wf = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers and "pull_request" in triggers
    jobs = wf["jobs"]
    matrix = jobs["matrix"]["strategy"]["matrix"]
    assert set(matrix["runner"]) == {"namespace", "docker"}
    for name, job in jobs.items():
        steps = job["steps"]
        assert steps[0]["uses"].startswith("actions/checkout@"), name
        if not any("pytest" in s.get("run", "") for s in steps):
            continue  # (the targets job only lists the built-in targets)
        runs = [s.get("run", "") for s in steps]
        assert any("ci/setup.sh" in r for r in runs), f"{name} must install with ci/setup.sh"
        assert all(r.strip().startswith("sudo") for r in runs if "pytest" in r), "the suite needs root"
        uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert uploads and uploads[0].get("if") == "always()", f"{name} must upload results even on failure"
    run = " ".join(s.get("run", "") for s in jobs["matrix"]["steps"])
    for flag in (
        "--junitxml",
        "--results-json",
        "--pcap-dir",
        "--runner ${{ matrix.runner }}",
        "--targets ${{ matrix.target }}",
    ):
        assert flag in run
    assert any(
        "docker-engine.sh" in s.get("run", "") and s.get("if") == "matrix.runner == 'docker'"
        for s in jobs["matrix"]["steps"]
    )


def test_container_recipe_never_pulls():
    dockerfile = (ROOT / "ci" / "Dockerfile").read_text()
    froms = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms == ["tcc-suite-base:bookworm"], "the base is built locally by ci/base-image.sh"
    assert "# syntax=" not in dockerfile
    assert "docker import" in (ROOT / "ci" / "base-image.sh").read_text()


def test_github_matrix_targets_come_from_the_target_records(tmp_path):
    """The matrix's targets are not listed in the workflow: a job prints BUILTIN and the matrix reads it."""
    jobs = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())["jobs"]
    target = jobs["matrix"]["strategy"]["matrix"]["target"]
    m = re.fullmatch(r"\$\{\{\s*fromJSON\(needs\.(\w+)\.outputs\.(\w+)\)\s*\}\}", str(target).strip())
    assert m, f"the matrix's targets must be a job's output, not a list: {target!r}"
    producer, output = m.groups()
    needs = jobs["matrix"].get("needs", [])
    assert producer in ([needs] if isinstance(needs, str) else needs), "the matrix job must need the job it reads"
    step_id, key = re.fullmatch(
        r"\$\{\{\s*steps\.(\w+)\.outputs\.(\w+)\s*\}\}", jobs[producer]["outputs"][output].strip()
    ).groups()
    step = next(s for s in jobs[producer]["steps"] if s.get("id") == step_id)
    # Run the step as the runner would (bash, from the checkout) and read what it wrote to $GITHUB_OUTPUT.
    out = tmp_path / "github_output"
    out.touch()
    subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=ROOT,
        check=True,
        timeout=60,
        env=dict(os.environ, GITHUB_OUTPUT=str(out)),
    )
    written = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert json.loads(written[key]) == list(BUILTIN)
