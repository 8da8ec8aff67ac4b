"""`python3 -m conformance kernel`: the suite under another kernel (conformance/kernels.py, docs/kernels.md).

What holds on any machine: the messages for a version apt does not have, for a way
to boot this machine lacks, for options the guest cannot honour, all before
anything boots. Where user-mode-linux works, a real boot: the refused case runs
in the guest and its JSON, HTML, JUnit and pcap come home with the guest's
kernel recorded; a guest that overruns its deadline is ended with its console
shown; nothing of either run is left behind.
"""

import fcntl
import glob
import json
import os
import subprocess
import sys
import tempfile

import pytest

from conformance import kernels

from .helpers import ROOT

UML = kernels.detect_uml()
needs_uml = pytest.mark.skipif(not UML.ok, reason=f"no user-mode-linux boot here: {UML.why}")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the kernel command runs as root")


def kernel(*args, timeout=240, env=None):
    """Run `python3 -m conformance kernel ARGS` from the checkout; (exit code, output)."""
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "kernel", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **(env or {})),
    )
    return proc.returncode, proc.stdout + proc.stderr


def leftovers(before: set) -> list[str]:
    """Run folders made since `before` that no live run holds (their lock is free): a run left them."""
    left = []
    for folder in set(glob.glob(os.path.join(tempfile.gettempdir(), kernels.RUN_PREFIX + "*"))) - before:
        try:
            with open(os.path.join(folder, "lock")) as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live run's (another test's)
        except OSError:
            pass
        left.append(folder)
    return left


def run_folders() -> set:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), kernels.RUN_PREFIX + "*")))


def stray_guests(before: set) -> list[str]:
    """Guest processes (UML's) of a run folder made since `before` that is gone: a run left them."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        for folder in line.partition(" tcc_job=")[2].split()[:1]
        if kernels.UML in line and folder not in before and not os.path.isdir(folder)
    ]


def test_version_spec_matching():
    assert kernels._matches("6.1", "linux-image-6.1.0-56-amd64", "6.1.192-2", "6.1.192")
    assert kernels._matches("6.1.192-2", "linux-image-6.1.0-56-amd64", "6.1.192-2", "6.1.192")
    assert kernels._matches("6.1.192", "linux-image-6.1.0-56-amd64", "6.1.192-2", "6.1.192")
    assert kernels._matches("linux-image-6.1.0-56-amd64", "linux-image-6.1.0-56-amd64", "6.1.192-2", "6.1.192")
    assert not kernels._matches("6.1", "linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1", "6.12.117")
    assert not kernels._matches("6", "linux-image-6.1.0-56-amd64", "6.1.192-2", "6.1.192")
    assert kernels._upstream("6.12.117-1~deb12u1") == "6.12.117"


def test_output_options_are_taken_out_for_the_host():
    args, found = kernels.split_outputs(
        ["tests/cases", "--results-json", "a.json", "--html=a.html", "--junit-xml", "j.xml", "-k", "refused"]
    )
    assert args == ["tests/cases", "-k", "refused"]
    assert found == {"--results-json": "a.json", "--html": "a.html", "--junitxml": "j.xml"}
    with pytest.raises(kernels.KernelError, match="read-only in the guest"):
        kernels.split_outputs(["--update-expectations"])
    with pytest.raises(kernels.KernelError, match="needs a value"):
        kernels.split_outputs(["--pcap-dir"])


def test_initramfs_is_a_newc_archive():
    data = kernels.cpio(
        [("dev", 0o40755, b"", (0, 0)), ("dev/console", 0o20600, b"", (5, 1)), ("x", 0o100644, b"abc", (0, 0))]
    )
    assert data.startswith(b"070701") and b"TRAILER!!!\0" in data and len(data) % 4 == 0
    header = data[data.index(b"070701", 6) :]  # the second entry: /dev/console, a character device 5:1
    fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
    assert fields[1] == 0o20600 and fields[9:11] == [5, 1]


def test_ways_to_boot_say_why_not_or_what_they_are(monkeypatch):
    found = kernels.ways()
    assert set(found) == {"kvm", "uml", "tcg"}
    for way in found.values():
        assert way.why, way
    if os.path.isdir("/sys/module/kvm_pvm"):  # this machine: a nested PVM /dev/kvm cannot boot a stock kernel
        assert not found["kvm"].ok and "kvm_pvm" in found["kvm"].why and "hangs" in found["kvm"].why
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "apt-get install qemu-system-x86" in kernels.detect_tcg().why
    assert "apt-get install qemu-system-x86" in kernels.detect_kvm().why
    monkeypatch.setattr(kernels, "UML", "/nonexistent/linux.uml")
    assert "apt-get install user-mode-linux" in kernels.detect_uml().why


def test_list_shows_the_ways_and_the_cache():
    code, out = kernel("--list", timeout=60)
    assert code == 0, out
    for name in ("kvm", "uml", "tcg"):
        assert f"  {name} " in out, out
    assert "kernels in the cache" in out and "in apt" in out


@needs_root
def test_unknown_version_names_what_apt_has():
    if not (kernels.detect_tcg().ok or kernels.detect_kvm().ok):
        code, out = kernel("9.99", "--", "--version", timeout=60)
        assert code == kernels.EXIT_USAGE and "no way to boot it here" in out, out
        return
    code, out = kernel("9.99", "--", "--version", timeout=60)
    assert code == kernels.EXIT_USAGE, out
    assert "9.99" in out and ("apt has:" in out or "apt-get update" in out), out
    code, out = kernel("banana", "--", "--version", timeout=60)
    assert code == kernels.EXIT_USAGE and "not a kernel version" in out, out


@needs_root
def test_uml_runs_only_its_own_kernel():
    if not UML.ok:
        code, out = kernel("6.1", "--boot", "uml", "--", "--version", timeout=60)
        assert code == kernels.EXIT_USAGE and "--boot uml cannot run here" in out, out
        return
    code, out = kernel("6.12", "--boot", "uml", "--", "--version", timeout=60)
    assert code == kernels.EXIT_USAGE and "user-mode-linux's own kernel" in out and "--boot tcg" in out, out


@needs_root
def test_refusals_come_before_any_boot(tmp_path):
    code, out = kernel("6.1", "--", "--update-expectations", timeout=60)
    assert code == kernels.EXIT_USAGE and "run --update-expectations on the host" in out, out
    code, out = kernel("6.1", "--", "tests/cases", "--results-json", "/tmp/world-writable-folder.json", timeout=60)
    assert code == kernels.EXIT_USAGE and "other users can write in /tmp" in out, out
    assert "booted" not in out


@needs_root
@needs_uml
def test_refused_case_under_uml_comes_home_with_the_guest_kernel(tmp_path):
    before = run_folders()
    results, page, junit, pcaps = tmp_path / "k.json", tmp_path / "k.html", tmp_path / "j.xml", tmp_path / "pcaps"
    code, out = kernel(
        "6.1", "--boot", "uml", "--", "tests/cases", "-k", "test_refused", "--families", "v4", "--targets", "c",
        "--keep-pcaps", "--results-json", str(results), "--html", str(page), f"--junitxml={junit}",
        "--pcap-dir", str(pcaps),
    )  # fmt: skip
    assert code == 0, out
    assert "booted by uml" in out and "refused v4" in out, out
    doc = json.loads(results.read_text())
    assert doc["kernel"] == kernels.uml_kernel().release != os.uname().release
    assert doc["guest"]["boot"] == "uml" and doc["guest"]["host_kernel"] == os.uname().release
    assert doc["guest"]["boot_to_init_s"] > 0 and doc["guest"]["pytest_s"] > 0
    [rec] = doc["results"]
    assert (rec["case"], rec["target"], rec["verdict"], rec["key"]) == ("refused v4", "c", "pass", "ECONNREFUSED")
    assert rec["pcap"] and os.path.dirname(rec["pcap"]) == str(pcaps) and os.path.getsize(rec["pcap"]) > 24
    assert f"href='pcaps/{os.path.basename(rec['pcap'])}'" in page.read_text()
    assert f"Kernel {doc['kernel']}" in page.read_text()
    assert "test_refused" in junit.read_text()
    assert str(results) in out  # pytest's "results-json: PATH" names the host's file, not the guest's
    assert leftovers(before) == []


@needs_root
@needs_uml
def test_a_guest_past_its_deadline_is_ended_with_its_console_shown(tmp_path):
    before = run_folders()
    code, out = kernel(
        "6.1", "--boot", "uml", "--deadline", "3", "--",
        "tests/cases", "-k", "test_time_wait", "--families", "v4", "--targets", "c", "-p", "no:xdist",
        timeout=120,
    )  # fmt: skip
    assert code == kernels.EXIT_GUEST, out
    assert "did not finish within 3 s (--deadline)" in out and "console's last lines" in out, out
    assert "  | " in out  # the console's tail
    assert leftovers(before) == [] and stray_guests(before) == []


@needs_root
@needs_uml
def test_a_guest_that_panics_ends_with_the_panic_shown(tmp_path):
    # a pytest plugin that crashes the guest's kernel as pytest loads it (sysrq c: a panic)
    (tmp_path / "tcc_panic_plugin.py").write_text("open('/proc/sysrq-trigger', 'w').write('c')\n")
    before = run_folders()
    code, out = kernel("6.1", "--boot", "uml", "--", "-p", "tcc_panic_plugin", env={"PYTHONPATH": str(tmp_path)})
    assert code == kernels.EXIT_GUEST, out
    assert "ended without a result" in out and "sysrq" in out.lower(), out
    assert leftovers(before) == [] and stray_guests(before) == []
