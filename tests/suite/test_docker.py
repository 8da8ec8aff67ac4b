"""The Docker runner: same cases, same verdicts, targets in containers; skips cleanly without an engine."""

import json
import os

import pytest

from conformance import compare
from conformance.docker_runner import OWNER_LABEL, DockerRunner, DockerUnavailable
from conformance.targets import BUILTIN, builtin_targets

from .helpers import ROOT, run_suite

MISSION = [
    "tests/cases/test_handshake.py",
    "tests/cases/test_refused.py",
    "tests/cases/test_timedout.py",
    "tests/cases/test_queue_full.py",
    "tests/cases/test_time_wait.py",
]


@pytest.fixture(scope="module")
def engine():
    runner = DockerRunner()
    try:
        return runner.client()
    except DockerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the docker-runner cases: {e} (.ci/run starts the engine)")
        pytest.skip(str(e))


# The targets whose images are small enough for every CI run (a static binary in FROM scratch, or
# Python on a minimal Debian base); Java's and Node's images carry a runtime of hundreds of MB.
IMAGED = [t for t in BUILTIN if builtin_targets()[t].image.base in ("scratch", "debian-python")]


def test_docker_runner_gives_the_namespace_runner_verdicts(engine, tmp_path):
    docs = {}
    for runner in ("namespace", "docker"):
        out = tmp_path / runner
        out.mkdir()
        code, outcomes, output = run_suite(
            out,
            *MISSION,
            "--targets",
            ",".join(IMAGED),
            "--families",
            "v4",
            "-n",
            "4",
            "--runner",
            runner,
            "--results-json",
            str(out / "r.json"),
            timeout=1800,
        )
        assert code == 0, output
        docs[runner] = json.loads((out / "r.json").read_text())
    assert len(docs["docker"]["results"]) == 7 * len(IMAGED)  # 7 mission rows a target
    for rec in docs["docker"]["results"]:
        assert rec["observed"]["runner"] == "docker" and rec["observed"]["docker_runtime"] == "runc"
        assert rec["observed"]["image"].startswith("sha256:")
    assert compare.diff(docs["namespace"], docs["docker"]) == []
    leftovers = engine.containers.list(all=True, filters={"label": OWNER_LABEL})
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


def test_one_target_in_docker_others_in_namespaces(engine, tmp_path):
    code, _, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "c,go",
        "--runner",
        "go=docker",
        "--results-json",
        str(tmp_path / "r.json"),
    )
    assert code == 0, output
    runners = {r["target"]: r["observed"]["runner"] for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert runners == {"c": "namespace", "go": "docker"}


@pytest.mark.parametrize("ci,outcome", [("", "skipped"), ("true", "failed")])
def test_unknown_oci_runtime_is_skipped_with_its_reason_but_fails_in_ci(engine, tmp_path, ci, outcome):
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "c",
        "--runner",
        "docker",
        "--docker-runtime",
        "no-such-runtime",
        "-rs",
        env={"CI": ci},
    )
    assert outcomes == {"test_refused[v4-c]": outcome}, output
    assert "OCI runtime 'no-such-runtime' is not configured" in output


def test_without_engine_docker_cases_skip_and_the_default_run_is_unaffected(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "CI": ""}
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "python,c",
        "--runner",
        "c=docker",
        "-rs",
        env=env,
    )
    assert outcomes == {"test_refused[v4-python]": "passed", "test_refused[v4-c]": "skipped"}, output
    assert "no Docker engine reachable" in output
    assert code == 0


@pytest.mark.parametrize(
    "spec,message",
    [
        ("podman", "runner must be one of namespace, docker"),
        ("cobol=docker", "'cobol' is not a selected target"),
    ],
)
def test_bad_runner_is_a_usage_error(tmp_path, spec, message):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--runner", spec)
    assert code == 4 and message in output and not outcomes


def test_sweep_removes_containers_of_dead_runs_only(engine, tmp_path):
    """Ownership holds across PID namespaces and hosts: a container whose run's lease is free is removed;
    one whose lease is held (a live run, whatever its PID) stays; one of another lockspace (another host or
    /run) is left alone and noted."""
    import subprocess
    import sys

    from conformance.docker_runner import SPACE_LABEL, sweep_containers
    from conformance.lease import LEASE_DIR, Lease, lockspace

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from conformance.lease import Lease; "
            "l = Lease(); print(l.space, l.id, flush=True); sys.stdin.read()",
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    space, live = holder.stdout.readline().split()
    dead = Lease()
    dead_id = dead.id
    os.close(dead._fd)  # its run died: the lock is free, the file stays
    dead._fd = -1
    image = DockerRunner().image("c")
    made = {}
    try:
        for name, (sp, owner) in {
            "dead": (space, dead_id),
            "live": (space, live),
            "elsewhere": ("0" * 32, "f" * 32),
        }.items():
            made[name] = engine.containers.create(
                image,
                stdin_open=True,
                network_mode="none",
                name=f"tcc-sweeptest-{name}-{os.getpid()}",
                labels={OWNER_LABEL: owner, SPACE_LABEL: sp},
            )
        removed, notes = sweep_containers()
        present = {c.name for c in engine.containers.list(all=True, filters={"label": OWNER_LABEL})}
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        for c in made.values():
            try:
                c.remove(force=True)
            except Exception:
                pass
    assert space == lockspace() and os.path.isdir(LEASE_DIR)
    assert made["dead"].name not in present, "the container of a run whose lease is free stayed"
    assert made["live"].name in present, "the sweep removed the container of a live run"
    assert made["elsewhere"].name in present, "the sweep removed a container whose owner it cannot judge"
    assert any(made["elsewhere"].name in n and "cannot be judged" in n for n in notes), notes


def test_a_sweep_that_cannot_list_says_so(tmp_path, monkeypatch):
    from conformance.docker_runner import sweep_containers

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    removed, notes = sweep_containers()
    assert removed == [] and notes and notes[0].startswith("could not list Docker containers to sweep")
