"""The Docker runner: same cases, same verdicts, targets in containers; skips cleanly without an engine."""
import json
import os

import pytest

from conformance import compare
from conformance.docker_runner import OWNER_LABEL, DockerRunner, DockerUnavailable

from .helpers import run_suite

MISSION = ["tests/cases/test_handshake.py", "tests/cases/test_refused.py", "tests/cases/test_timedout.py",
           "tests/cases/test_queue_full.py", "tests/cases/test_time_wait.py"]


@pytest.fixture(scope="module")
def engine():
    runner = DockerRunner()
    try:
        return runner.client()
    except DockerUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the docker-runner cases: {e} (.ci/run starts the engine)")
        pytest.skip(str(e))


def test_docker_runner_gives_the_namespace_runner_verdicts(engine, tmp_path):
    docs = {}
    for runner in ("namespace", "docker"):
        out = tmp_path / runner
        out.mkdir()
        code, outcomes, output = run_suite(out, *MISSION, "--families", "v4", "-n", "4", "--runner", runner,
                                           "--results-json", str(out / "r.json"), timeout=1800)
        assert code == 0, output
        docs[runner] = json.loads((out / "r.json").read_text())
    assert len(docs["docker"]["results"]) == 21
    for rec in docs["docker"]["results"]:
        assert rec["observed"]["runner"] == "docker" and rec["observed"]["docker_runtime"] == "runc"
        assert rec["observed"]["image"].startswith("sha256:")
    assert compare.diff(docs["namespace"], docs["docker"]) == []
    leftovers = engine.containers.list(all=True, filters={"label": OWNER_LABEL})
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


def test_one_target_in_docker_others_in_namespaces(engine, tmp_path):
    code, _, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--families", "v4", "--targets", "c,go",
                                "--runner", "go=docker", "--results-json", str(tmp_path / "r.json"))
    assert code == 0, output
    runners = {r["target"]: r["observed"]["runner"] for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert runners == {"c": "namespace", "go": "docker"}


def test_unknown_oci_runtime_is_skipped_with_its_reason(engine, tmp_path):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--families", "v4", "--targets", "c",
                                       "--runner", "docker", "--docker-runtime", "no-such-runtime", "-rs")
    assert outcomes == {"test_refused[v4-c]": "skipped"}, output
    assert "OCI runtime 'no-such-runtime' is not configured" in output


def test_without_engine_docker_cases_skip_and_the_default_run_is_unaffected(tmp_path):
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--families", "v4",
                                       "--targets", "python,c", "--runner", "c=docker", "-rs", env=env)
    assert outcomes == {"test_refused[v4-python]": "passed", "test_refused[v4-c]": "skipped"}, output
    assert "no Docker engine reachable" in output
    assert code == 0


@pytest.mark.parametrize("spec,message", [
    ("podman", "runner must be one of namespace, docker"),
    ("rust=docker", "'rust' is not a selected target"),
])
def test_bad_runner_is_a_usage_error(tmp_path, spec, message):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--runner", spec)
    assert code == 4 and message in output and not outcomes


def test_containers_of_a_killed_run_are_swept(engine, tmp_path):
    """A container whose owner died (a run killed outright) is removed when the next run starts."""
    import subprocess

    from conformance.docker_runner import sweep_containers

    dead = subprocess.Popen(["true"])
    dead.wait()
    image = DockerRunner().image("c")
    container = engine.containers.create(image, stdin_open=True, network_mode="none", name=f"tcc{dead.pid}-zzc",
                                         labels={OWNER_LABEL: str(dead.pid)})
    try:
        sweep_containers()  # (another run on this machine may sweep it first: either way it must be gone)
        gone = not engine.containers.list(all=True, filters={"name": f"tcc{dead.pid}-zzc"})
    finally:
        try:
            container.remove(force=True)
        except Exception:
            pass
    assert gone, "the sweep left the container of a dead owner"
