"""Nothing is left behind: namespaces, veths and agent processes go, also on Ctrl-C and SIGTERM."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conformance.case import Net
from conformance.targets import builtin_targets
from conformance.topology import NETNS_DIR, PREFIX, owned_names, sweep

from .helpers import PYTEST, ROOT


def suite_namespaces(pid=None):
    """The suite's namespaces (its naming pattern: other tools' tcc* names are not ours), of pid's run if given."""
    names = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
    return sorted(n for n, owner in owned_names(names) if pid is None or owner == pid)


def netns_pids(name):
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def test_net_close_removes_namespaces_links_and_agents():
    net = Net()
    agent = net.start(builtin_targets()["python"])
    names = [net.target.ns, net.peer.ns]
    assert all(n in suite_namespaces(os.getpid()) for n in names)
    net.close()
    assert not [n for n in names if n in suite_namespaces()]
    assert not alive(agent.pid)


def test_failure_in_setup_removes_what_was_made(monkeypatch):
    """A namespace that fails halfway (here: a bad sysctl) is removed before the error surfaces."""
    before = suite_namespaces(os.getpid())
    with pytest.raises(ValueError, match="unknown sysctl net.ipv4.no_such_thing"):
        Net(target_sysctls={"net.ipv4.no_such_thing": "1"})
    assert suite_namespaces(os.getpid()) == before


def run_namespaces(pid):
    """The namespaces of pid's run: its own, and those of its children (cases in flight, xdist workers)."""
    return sorted(name for name, owner in owned_names(suite_namespaces()) if owner == pid or _parent(owner) == pid)


def case_started(proc):
    """Wait (20 s at most) until proc's run has a case with its namespaces and a process in them:
    (namespace names, pids in them)."""
    names, agents = [], []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not agents:
        names = run_namespaces(proc.pid)
        agents = [p for n in names for p in netns_pids(n)]
        time.sleep(0.05)
    assert names and agents, "the case never started its namespaces and agent"
    return names, agents


@pytest.mark.parametrize("in_flight", ["1", "2"], ids=["in-process", "in-flight"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_leaves_nothing(sig, in_flight):
    """Interrupt pytest in the middle of a case (connect() waiting on SYN retransmissions): run in
    pytest's own process, or in flight in a forked child (the signal reaches pytest only)."""
    from .helpers import deviant

    # A target that ignores TCP_SYNCNT keeps connect() waiting for the kernel's 133 s (the
    # harness deadline ends it at 30 s): the signal always arrives in the middle of the case.
    args = [
        "-p",
        "no:cacheprovider",
        "-q",
        "tests/cases/test_timedout.py",
        "--targets",
        "slow",
        "--add-target",
        deviant("ignore-syncnt", "slow"),
        "--families",
        "v4",
        "--agent-deadline",
        "30",
        "--in-flight",
        in_flight,
    ]
    # pytest as a user starts it from a shell: Ctrl-C raises KeyboardInterrupt. (A process started
    # from an xdist worker inherits SIGINT ignored, so the child sets Python's handler itself.)
    launcher = (
        "import signal, sys, pytest; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.exit(pytest.main({args!r}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        names, agents = case_started(proc)
        time.sleep(0.3)  # inside connect(), waiting for the SYN timer
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not [n for n in names if n in suite_namespaces()], out.decode()
    assert not [p for p in agents if alive(p)], "an agent process outlived the run"
    assert proc.returncode == 2 and b"KeyboardInterrupt" in out, out.decode()  # interrupted, mid-case


def test_sweep_removes_only_dead_owners():
    # A namespace named for a PID that is not running, as a SIGKILLed run leaves it.
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{PREFIX}{dead.pid}-zzt"
    subprocess.run(["ip", "netns", "add", name], check=True)
    net = Net()  # ours, alive
    try:
        sweep()  # (another run on this machine may sweep it first: either way it must be gone)
        assert name not in suite_namespaces()
        assert net.target.ns in suite_namespaces(), "the sweep removed a live run's namespace"
    finally:
        net.close()
        if name in suite_namespaces():
            subprocess.run(["ip", "netns", "del", name])


@pytest.mark.parametrize("mode", [["-n", "2"], ["--in-flight", "2"]], ids=["xdist-worker", "in-flight-child"])
def test_killed_worker_leaves_no_agent_and_its_namespaces_are_swept(mode):
    """SIGKILL the process running a case (an xdist worker, or the forked child of cases in flight):
    its agent dies with it (PR_SET_PDEATHSIG), and the run's sweep removes the namespaces it could
    not. In flight, the case fails, naming its process's death."""
    from .helpers import deviant

    proc = subprocess.Popen(  # a case that stays in connect() (see test_interrupted_run_leaves_nothing)
        [
            *PYTEST,
            *mode,
            "tests/cases/test_timedout.py",
            "--targets",
            "slow",
            "--add-target",
            deviant("ignore-syncnt", "slow"),
            "--families",
            "v4",
            "--agent-deadline",
            "30",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        victim, names, agents = None, [], []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not agents:
            for name in suite_namespaces():
                pid = next(owner for _, owner in owned_names([name]))
                if pid != os.getpid() and _parent(pid) == proc.pid:  # a worker of this run
                    victim = pid
                    names = suite_namespaces(pid)
                    agents = [p for n in names for p in netns_pids(n)]
                    break
            time.sleep(0.05)
        assert victim and agents, "no worker started a case"
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode()
    assert not [p for p in agents if alive(p)], "an agent outlived its killed worker"
    # Removed by this run's end-of-run sweep (which says so), or, when other runs share the
    # machine (this suite's own tests do), by whichever run's sweep came first.
    assert suite_namespaces(victim) == [], text
    if "--in-flight" in mode:
        assert proc.returncode == 1 and f"(pid {victim}) ended without its report: killed by signal 9" in text, text


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def test_host_namespace_untouched():
    """Links, addresses, routes, rules, neighbours and net sysctls of the host are the same after cases ran."""
    before = host_snapshot()
    code = subprocess.run(
        [
            *PYTEST,
            "-n",
            "4",
            "tests/cases",
            "-k",
            "refused or handshake or time_wait or queue_full or unreachable or udp",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    after = host_snapshot()
    assert code.returncode in (0, 1), code.stdout[-3000:]
    for part in before:
        assert before[part] == after[part], f"the host's {part} changed"


VOLATILE = ("nf_conntrack_count", "/stats", "random", "netfilter/nf_log")


def host_snapshot():
    from pyroute2 import IPRoute

    def clean(msgs):
        out = []
        for m in msgs:
            attrs = sorted(
                (k, str(v))
                for k, v in m.get("attrs", [])
                if k
                not in (
                    "IFLA_STATS",
                    "IFLA_STATS64",
                    "IFLA_AF_SPEC",
                    "IFA_CACHEINFO",
                    "RTA_CACHEINFO",
                    "IFLA_XDP",
                    "NDA_CACHEINFO",
                    "NDA_PROBES",
                    "IFLA_PROTINFO",
                    "IFLA_LINKINFO",
                    "IFLA_PERM_ADDRESS",
                    "IFLA_MAP",
                )
            )
            out.append(attrs)
        return sorted(out)

    with IPRoute() as ipr:
        snap = {
            "links": clean(ipr.get_links()),
            "addresses": clean(ipr.get_addr()),
            "routes": clean(ipr.get_routes(family=2)) + clean(ipr.get_routes(family=10)),
            "rules": clean(ipr.get_rules(family=2)) + clean(ipr.get_rules(family=10)),
        }
    sysctls = {}
    for dirpath, _, files in os.walk("/proc/sys/net"):
        for f in files:
            path = os.path.join(dirpath, f)
            if any(v in path for v in VOLATILE):
                continue
            try:
                with open(path) as fh:
                    sysctls[path] = fh.read()
            except OSError:
                pass
    snap["sysctls"] = sysctls
    snap["netns"] = sorted(
        n for n in (os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []) if not n.startswith(PREFIX)
    )
    return snap


FAULTY = {
    "failing-case": None,  # the deviant target: a case fails
    "crash": "import sys\nprint('ready proto=1 lang=fake version=1 pid=1', flush=True)\n"
    "sys.stdin.readline()\nsys.exit(139)",
    "hang": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport time\ntime.sleep(300)",
    "garbage": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport sys, time\nsys.stdin.readline()\n"
    "print('\\x00\\xff garbage', flush=True)\ntime.sleep(300)",
}


@pytest.mark.parametrize("fault", list(FAULTY))
def test_faults_leave_nothing(tmp_path, fault):
    """After a run with a failing case or a crashing, hanging or garbage-printing agent: no namespace,
    no agent process and no temporary file of the suite remains."""
    from .helpers import DEVIANT

    script = tmp_path / f"{fault}-agent.py"  # its path in the agent's command line finds leftovers
    script.write_text(
        FAULTY[fault]
        or f"import runpy, sys\nsys.argv = ['agent', '--mode', 'linger-close']\n"
        f"runpy.run_path({str(DEVIANT)!r}, run_name='__main__')\n"
    )
    spec = f"bad={sys.executable} {script}"
    tmpdir = tmp_path / "tmp"  # the run's TMPDIR: whatever temporary file it leaves shows here
    tmpdir.mkdir()
    proc = subprocess.Popen(
        [
            *PYTEST,
            "tests/cases/test_time_wait.py",
            "--families",
            "v4",
            "--targets",
            "bad",
            "--add-target",
            spec,
            "--agent-deadline",
            "1",
            "--pcap-dir",
            str(tmp_path / "pcaps"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TMPDIR=str(tmpdir)),
    )
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out.decode()
    assert suite_namespaces(proc.pid) == []
    leftover = subprocess.run(["pgrep", "-a", "-f", str(script)], capture_output=True, text=True)
    assert leftover.stdout.split() == [], f"an agent process outlived the run: {leftover.stdout}"
    assert os.listdir(tmpdir) == [], f"temporary files left: {os.listdir(tmpdir)}"


def test_killed_pytest_leaves_nothing_of_its_cases_in_flight():
    """SIGKILL pytest itself while a case runs in flight: the case's child is told (PR_SET_PDEATHSIG,
    SIGTERM), ends the case as on Ctrl-C, and removes its namespaces and agent; nobody is left to sweep."""
    proc = subprocess.Popen(  # an agent that never says hello: the case waits out --agent-deadline, 60 s
        [
            *PYTEST,
            "tests/cases/test_refused.py",
            "--targets",
            "mute",
            "--add-target",
            "mute=sleep 120",
            "--families",
            "v4",
            "--agent-deadline",
            "60",
            "--in-flight",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        names, agents = case_started(proc)
        child = next(owner for _, owner in owned_names(names))
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15  # the case's teardown; left alone, the case would wait 60 s
        while time.monotonic() < deadline and (alive(child) or [n for n in names if n in suite_namespaces()]):
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive(child), "the case's child outlived pytest"
    assert not [n for n in names if n in suite_namespaces()], "the case's namespaces outlived pytest"
    assert not [p for p in agents if alive(p)], "an agent outlived pytest"
