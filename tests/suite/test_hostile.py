"""Agents are untrusted programs: whatever they print or do, the harness stays bounded."""

import sys
import tempfile
import time

import pytest

from conformance.agent import Agent, AgentError, StderrTail

READY = "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\n"
HOSTILE = {
    # closes its stdout but keeps running: the harness must not wait on it forever
    "closes-stdout": READY + "import os, sys, time\nsys.stdin.readline()\nos.close(1)\ntime.sleep(60)",
    # closes its stdin (it will never read a command) and keeps running
    "closes-stdin": "import os, time\nos.close(0)\n" + READY + "time.sleep(60)",
    # floods stderr without end
    "floods-stderr": READY + "import sys\nsys.stdin.readline()\nwhile True:\n    sys.stderr.write('x' * 65536)",
    # escape sequences in a reply's message and on stderr
    "escapes": READY + "import sys, time\nsys.stdin.readline()\nsys.stderr.write('\\x1b[2J\\x1b]0;pwned\\x07')\n"
    "sys.stderr.flush()\nprint('unsupported 1 msg=%1B%5B31mred%07', flush=True)\ntime.sleep(60)",
}


def start(tmp_path, kind, deadline=10.0):
    script = tmp_path / f"{kind}.py"
    script.write_text(HOSTILE[kind])
    return Agent(kind, [sys.executable, str(script)], deadline=deadline)


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("closes-stdout", "agent closed its stdout before replying"),
        ("closes-stdin", "agent closed its stdin"),
    ],
)
def test_an_agent_that_closes_a_pipe_and_lives_on_is_killed_in_bounded_time(tmp_path, kind, reason):
    agent = start(tmp_path, kind)
    began = time.monotonic()
    try:
        with pytest.raises(AgentError, match=reason):
            for _ in range(3):  # closes-stdin: the pipe may take a write or two to break
                agent.call("socket tcp inet")
                time.sleep(0.1)
        assert agent.proc.poll() is not None, "the agent must be killed"
    finally:
        agent.stop()
    assert time.monotonic() - began < 10, "the harness waited on the agent without a bound"


def test_a_flooding_stderr_is_kept_as_a_bounded_tail(tmp_path):
    agent = start(tmp_path, "floods-stderr")
    try:
        agent.submit("socket tcp inet")
        time.sleep(0.5)  # megabytes a second
        with pytest.raises(AgentError, match="no reply within"):
            agent.receive("socket tcp inet", 0.2)
        assert len(agent._stderr._buf) <= StderrTail.LIMIT
        assert agent._stderr.tail().endswith("x" * 100)
    finally:
        agent.stop()


def test_control_characters_from_an_agent_are_escaped(tmp_path):
    agent = start(tmp_path, "escapes")
    try:
        reply = agent.call("socket tcp inet")
        assert "\x1b" not in str(reply) and "\\x1b[31mred\\x07" in str(reply)
        time.sleep(0.2)
        assert "\x1b" not in agent._stderr_tail() and "\\x1b]0;pwned\\x07" in agent._stderr_tail()
    finally:
        agent.stop()


FORKS = """import os, signal, sys, time
for _ in range(3):  # children and a grandchild that ignore every signal they can and outlive their parent
    if os.fork() == 0:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        os.setsid()
        if os.fork() == 0:
            time.sleep(300)
        time.sleep(300)
print('ready proto=1 lang=fake version=1 pid=1', flush=True)
sys.stdin.readline()
"""


def test_processes_an_agent_starts_die_with_it(tmp_path):
    """An agent that forks (or a wrapper script without exec) leaves nothing running after its case."""
    from conformance.case import Net
    from conformance.targets import Target
    from conformance.timing import wait_until
    from conformance.topology import processes_in

    script = tmp_path / "forks.py"
    script.write_text(FORKS)
    with Net() as net:
        agent = net.start(Target("forks", [sys.executable, str(script)]))
        # the agent, 3 children, 3 grandchildren (they fork on their own time)
        assert wait_until(lambda: len(pids_running(script)) >= 7, 5.0), pids_running(script)
        assert len(processes_in(net.target.ns)) >= 7, "the agent and its descendants run in the namespace"
    assert agent.proc.poll() is not None
    survivors = pids_running(script)
    assert survivors == [], f"processes the agent started outlived its case: {survivors}"


def pids_running(script):
    import subprocess

    out = subprocess.run(["pgrep", "-f", str(script)], capture_output=True, text=True).stdout.split()
    alive = []
    for pid in map(int, out):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except FileNotFoundError:
            pass
    return alive


ESCAPES = """#!/bin/sh
echo "ready proto=1 lang=sh version=1 pid=$$"
did=""
nsenter --net=/proc/1/ns/net true 2>/dev/null && did="$did,nsenter"
unshare --net true 2>/dev/null && did="$did,unshare"
echo tcc-hostile > /proc/sys/kernel/domainname 2>/dev/null && did="$did,host-sysctl"
echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && did="$did,netns-sysctl"
mount -t tmpfs tcc-hostile /mnt 2>/dev/null && did="$did,mount"
touch /etc/tcc-hostile 2>/dev/null && did="$did,write-etc"
read line
echo "unsupported 1 msg=did:${did:-nothing}"
read line
"""


def test_an_agent_cannot_leave_its_sandbox():
    """An agent that tries to enter the host's namespace, to write a host sysctl, to mount and to write the
    host's files fails at each: it runs without capabilities, with no_new_privs, as an unprivileged uid."""
    import os
    import subprocess

    from conformance.case import Net
    from conformance.privilege import AGENT_UID
    from conformance.targets import Target

    folder = tempfile.mkdtemp(prefix="tcc-escape-", dir="/tmp")  # pytest's tmp_path is private to root
    os.chmod(folder, 0o755)
    script = os.path.join(folder, "escape.sh")
    with open(script, "w") as f:
        f.write(ESCAPES)
    os.chmod(script, 0o755)
    before = (
        open("/proc/sys/kernel/domainname").read(),
        os.path.exists("/etc/tcc-hostile"),
        open("/proc/self/mountinfo").read().count("tcc-hostile"),
    )
    with Net() as net:
        agent = net.start(Target("escape", ["/bin/sh", str(script)]))
        reply = agent.call("socket tcp inet")
    after = (
        open("/proc/sys/kernel/domainname").read(),
        os.path.exists("/etc/tcc-hostile"),
        open("/proc/self/mountinfo").read().count("tcc-hostile"),
    )
    subprocess.run(["rm", "-rf", folder], check=True)
    assert agent.uid == AGENT_UID, agent.uid_reason
    assert reply.msg == "did:nothing", f"the agent got out: {reply.msg}"
    assert after == before, "the host changed"


SANDBOX = """#!/bin/sh
echo "ready proto=1 lang=sh version=1 pid=$$"
read line
status=$(grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status | tr -d ' \\t' | tr '\\n' ,)
echo "unsupported 1 msg=pid:$$,uid:$(id -u),groups:$(id -G | tr ' ' +),$status"
read line
"""


@pytest.mark.parametrize("reachable", [True, False], ids=["as-nobody", "keeps-uid-0"])
def test_the_launcher_takes_every_capability(tmp_path, reachable):
    """What the launcher (conformance/launch.c) hands the agent, read from the kernel's view of it:
    PID 1 of its own PID namespace, no capability in any set (also when it keeps uid 0 because its
    files are out of nobody's reach), no_new_privs, and nobody's ids without supplementary groups."""
    import os
    import subprocess

    from conformance.case import Net
    from conformance.privilege import AGENT_UID
    from conformance.targets import Target

    folder = tempfile.mkdtemp(prefix="tcc-sandbox-", dir="/tmp") if reachable else str(tmp_path)
    os.chmod(folder, 0o755 if reachable else 0o700)
    script = os.path.join(folder, "sandbox.sh")
    with open(script, "w") as f:
        f.write(SANDBOX)
    os.chmod(script, 0o755)
    try:
        with Net() as net:
            agent = net.start(Target("sandbox", ["/bin/sh", script]))
            seen = dict(kv.split(":", 1) for kv in agent.call("socket tcp inet").msg.strip(",").split(","))
    finally:
        if reachable:
            subprocess.run(["rm", "-rf", folder], check=True)
    uid = AGENT_UID if reachable else 0
    assert agent.uid == uid, agent.uid_reason
    assert seen["pid"] == "1", f"the agent is not PID 1 of a PID namespace of its own: {seen}"
    assert seen["uid"] == str(uid), seen
    if reachable:
        assert seen["groups"] == str(AGENT_UID), f"supplementary groups kept: {seen}"
    sets = {k: v for k, v in seen.items() if k.startswith("Cap")}
    assert sets == dict.fromkeys(["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"], "0000000000000000"), sets
    assert seen["NoNewPrivs"] == "1", seen
