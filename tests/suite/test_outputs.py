"""Output paths cannot be turned against root: private folders, no symlink followed, checked up front;
a disk that fills mid-run costs the pcaps, never a verdict."""

import json
import os
import stat
import subprocess
import tempfile

import pytest

from conformance import outputs

from .helpers import PYTEST, ROOT, deviant, run_suite

NOBODY = 65534


@pytest.fixture
def planted(tmp_path):
    """A folder owned by `nobody`, who planted links in it to files root owns."""
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    folder = tempfile.mkdtemp(prefix="tcc-plant-", dir="/tmp")
    os.chmod(folder, 0o755)
    os.chown(folder, NOBODY, NOBODY)
    for name in ("pcaps", "r.json"):
        subprocess.run(
            [
                "setpriv",
                "--reuid",
                str(NOBODY),
                "--regid",
                str(NOBODY),
                "--clear-groups",
                "ln",
                "-s",
                str(victim),
                os.path.join(folder, name),
            ],
            check=True,
        )
    yield folder, victim
    subprocess.run(["rm", "-rf", folder], check=True)


@pytest.mark.parametrize("option,name", [("--pcap-dir", "pcaps"), ("--results-json", "r.json"), ("--html", "r.json")])
def test_paths_another_user_controls_are_refused_before_any_namespace(tmp_path, planted, option, name):
    folder, victim = planted
    code, outcomes, output = run_suite(
        tmp_path, "tests/cases/test_refused.py", "--families", "v4", option, os.path.join(folder, name)
    )
    assert code == 4 and not outcomes, output
    assert f"{option}: " in output and ("symbolic link" in output or "belongs to uid 65534" in output), output
    assert victim.read_text() == "root's file\n"


def test_default_pcap_folder_is_private_and_fresh(tmp_path):
    code, _, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "dev",
        "--add-target",
        deviant("wrong-errno", "dev"),
        "--pcap-dir",
        "",
    )
    folder = next(
        line.split("pcap files: ", 1)[1].split()[0] for line in output.splitlines() if line.startswith("pcap files: ")
    )
    try:
        st = os.stat(folder)
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid(), oct(st.st_mode)
        assert os.path.basename(folder).startswith("tcp-conformance-") and len(os.path.basename(folder)) > 20
        assert os.listdir(folder) == ["test_refused[v4-dev].pcap"]
    finally:
        subprocess.run(["rm", "-rf", folder])


@pytest.mark.parametrize(
    "path,message",
    [("/tmp", "/tmp is a folder"), ("/tmp/x.json", "other users can write"), ("/nonexistent/x.json", "does not exist")],
)
def test_bad_results_paths(path, message):
    with pytest.raises(outputs.OutputError, match=message):
        outputs.check_file(path, "--results-json")


def test_a_failed_results_write_leaves_no_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # os.replace onto a folder fails, as a full disk would fail the write
    with pytest.raises(OSError):
        outputs.write_json(str(tmp_path / "taken"), {"a": 1})
    assert sorted(os.listdir(tmp_path)) == ["taken"]


def test_a_full_disk_costs_the_pcaps_not_the_verdicts(tmp_path):
    """The pcap folder is a full 64 KiB tmpfs (in a mount namespace of the test's own): the failing case's
    verdict is still recorded and printed, the failed write is reported once, nothing aborts."""
    disk = tmp_path / "disk"
    disk.mkdir(mode=0o700)
    results = tmp_path / "r.json"
    inner = [
        *PYTEST,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "python,dev",
        "--add-target",
        deviant("wrong-errno", "dev"),
        "--keep-pcaps",
        "--pcap-dir",
        str(disk / "pcaps"),
        "--results-json",
        str(results),
    ]
    script = (
        f"mount -t tmpfs -o size=64k,mode=700 tcc-full {disk} && mkdir -m 700 {disk}/pcaps && "
        f"(dd if=/dev/zero of={disk}/fill bs=4k 2>/dev/null || true) && exec " + " ".join(map(repr, inner))
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # the deviant's case failed; nothing else went wrong
    assert "INTERNALERROR" not in out and "Traceback" not in out, out
    assert out.count("could not write pcap") == 1 and "No space left on device" in out, out
    verdicts = {(r["target"], r["verdict"]) for r in json.loads(results.read_text())["results"]}
    assert verdicts == {("python", "pass"), ("dev", "FAIL")}
