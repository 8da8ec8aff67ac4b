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


FIVE = "test_handshake or test_refused or test_timedout or test_queue_full or test_time_wait"


def test_ci_compares_the_five_behaviours_under_another_kernel():
    """.ci/run runs the README's command, then the five behaviours on the host and under Linux 6.1 by
    user-mode-linux (which setup installs), compared with the declared kernel differences; the GitHub
    workflow does the same for 6.1 and 6.12 booted by KVM."""
    run = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in run.splitlines()]
    main = lines.index("bash ci/setup.sh && python3 -m pytest -n 8")
    kernel = next(i for i, line in enumerate(lines) if line.startswith("KERNEL_RUNS="))
    assert main < kernel, "the kernel step comes after the main test command"
    assert lines[kernel].startswith('KERNEL_RUNS="6.1:uml" DECLARED=kernel-differences.toml bash ci/kernel-matrix.sh')
    matrix = (ROOT / "ci" / "kernel-matrix.sh").read_text()
    assert f'sel="{FIVE}"' in matrix and '-k "$sel" --families v4' in matrix
    assert '--declared "$declared"' in matrix
    assert (ROOT / "kernel-differences.toml").exists()
    setup = (ROOT / "ci" / "setup.sh").read_text()
    assert "need_apt+=(user-mode-linux)" in setup and "need_apt+=(kmod)" in setup
    job = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())["jobs"]["kernels"]
    assert set(job["strategy"]["matrix"]["kernel"]) >= {"6.1", "6.12"}
    runs = [s.get("run", "") for s in job["steps"]]
    assert any("ci/setup.sh" in r for r in runs)
    step = next(r for r in runs if "kernel-matrix.sh" in r)
    assert step.startswith("sudo") and "KERNEL_RUNS=${{ matrix.kernel }}:kvm" in step
    assert "DECLARED=kernel-differences.toml" in step
    uploads = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert uploads and uploads[0].get("if") == "always()"


def test_kernel_matrix_fails_on_a_failed_run_and_says_so(tmp_path):
    """With DECLARED, ci/kernel-matrix.sh is a check: a run that fails (here pytest collects nothing: exit 5)
    fails it, with what failed named; without DECLARED it only reports."""
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\n[ "$1" = -m ] && [ "$2" = pytest ] && { echo "no tests ran"; exit 5; }\nexit 0\n')
    fake.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fake), KERNEL_RUNS="", DECLARED="kernel-differences.toml")
    script = str(ROOT / "ci" / "kernel-matrix.sh")
    out = subprocess.run(["bash", script, str(tmp_path / "o")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "kernel-matrix: FAILED: host (exit 5)" in out.stderr
    env.pop("DECLARED")
    out = subprocess.run(["bash", script, str(tmp_path / "p")], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
