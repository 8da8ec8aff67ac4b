"""The pipeline material in ci/ is well-formed and runs what the README says."""
import yaml

from .helpers import ROOT


def test_github_workflow_structure():
    wf = yaml.safe_load((ROOT / "ci" / "github-actions.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as True
    assert "push" in triggers and "pull_request" in triggers
    jobs = wf["jobs"]
    matrix = jobs["matrix"]["strategy"]["matrix"]
    assert set(matrix["target"]) == {"python", "c", "go"}
    assert set(matrix["runner"]) == {"namespace", "docker"}
    for name, job in jobs.items():
        steps = job["steps"]
        assert steps[0]["uses"].startswith("actions/checkout@"), name
        runs = [s.get("run", "") for s in steps]
        assert any("ci/setup.sh" in r for r in runs), f"{name} must install with ci/setup.sh"
        assert all(r.strip().startswith("sudo") for r in runs if "pytest" in r), "the suite needs root"
        uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
        assert uploads and uploads[0].get("if") == "always()", f"{name} must upload results even on failure"
    run = " ".join(s.get("run", "") for s in jobs["matrix"]["steps"])
    for flag in ("--junitxml", "--results-json", "--pcap-dir", "--runner ${{ matrix.runner }}",
                 "--targets ${{ matrix.target }}"):
        assert flag in run
    assert any("docker-engine.sh" in s.get("run", "") and s.get("if") == "matrix.runner == 'docker'"
               for s in jobs["matrix"]["steps"])


def test_container_recipe_never_pulls():
    dockerfile = (ROOT / "ci" / "Dockerfile").read_text()
    froms = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    assert froms == ["tcc-suite-base:bookworm"], "the base is built locally by ci/base-image.sh"
    assert "# syntax=" not in dockerfile
    assert "docker import" in (ROOT / "ci" / "base-image.sh").read_text()
