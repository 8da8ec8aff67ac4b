"""The library (conformance/) stands without pytest; the plugin is registered the standard way."""

import ast
import re
import subprocess
import sys
import tomllib

import pytest

from conformance import timing
from conformance.capture import Segment, noise, relative

from .helpers import ROOT, run_suite


def test_the_library_imports_no_pytest():
    for path in sorted((ROOT / "conformance").glob("*.py")):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not names & {"pytest", "_pytest", "pytest_tcp_conformance"}, f"{path.name} imports pytest"


def test_no_case_imports_pyroute2_or_another_test_module():
    for path in sorted((ROOT / "tests" / "cases").glob("test_*.py")):
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) pyroute2", text, re.M), f"{path.name} imports pyroute2"
        assert not re.search(r"^\s*from \.(test_|\w)", text, re.M), f"{path.name} imports another test module"


def test_readme_example_drives_a_case_from_plain_python():
    """The README's plain-Python example runs as it is written (no pytest involved)."""
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"<!-- example: plain python -->\s*```python\n(.*?)```", readme, re.S)
    assert example, "README.md lacks the plain-Python example"
    proc = subprocess.run(
        [sys.executable, "-c", example.group(1)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ECONNREFUSED" in proc.stdout and "[RA]" in proc.stdout, proc.stdout


def test_plugin_entry_point_and_checkout_conftest_name_one_module():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    entry = project["entry-points"]["pytest11"]
    assert entry == {"pytest_tcp_conformance.plugin": "pytest_tcp_conformance.plugin"}
    assert 'pytest_plugins = ["pytest_tcp_conformance.plugin"]' in (ROOT / "conftest.py").read_text()
    assert not (ROOT / "fixtures" / "__init__.py").exists(), "`fixtures` is a PyPI package: not an installed name"


@pytest.mark.parametrize("text", ["0.5", "0", "-1", "nan", "inf", "banana", ""])
def test_bad_timing_slack(text):
    with pytest.raises(ValueError, match="timing slack must be"):
        timing.parse_slack(text)


def test_timing_slack_scales_tolerances_and_waits():
    before = timing.factor()
    try:
        timing.set_slack(3)
        assert timing.slack(0.1) == pytest.approx(0.3)
        calls = []
        assert timing.wait_until(lambda: calls.append(1), 0.02, 0.005) is None
        assert len(calls) >= 4, "a wait of 0.02 s at slack 3 polls for about 0.06 s"
    finally:
        timing.set_slack(before)


def test_timing_slack_option_is_checked_before_any_namespace(tmp_path):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--timing-slack", "nan")
    assert code == 4 and "timing slack must be a finite number >= 1, got 'nan'" in output and not outcomes


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_in_flight_option_is_checked_before_any_namespace(tmp_path, value):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--in-flight", value)
    assert code == 4 and f"--in-flight must be a whole number >= 1 or auto, got {value!r}" in output, output
    assert not outcomes


def test_wire_evidence_is_relative_and_leaves_out_link_noise():
    segs = [
        Segment(5.0, "icmp6", "fe80::1", "ff02::16", icmp_type=143),
        Segment(10.0, "tcp", "198.51.100.2", "198.51.100.1", 40000, 7878, "S", 3_000_000_000, 0),
        Segment(10.0001, "tcp", "198.51.100.1", "198.51.100.2", 7878, 40000, "SA", 77, 3_000_000_001),
        Segment(10.0002, "tcp", "198.51.100.2", "198.51.100.1", 40000, 7878, "PA", 3_000_000_001, 78, 18),
    ]
    lines = relative(s for s in segs if not noise(s))
    assert lines == [
        " 0.000000 198.51.100.2.40000 > 198.51.100.1.7878 [S] seq 0 len 0",
        " 0.000100 198.51.100.1.7878 > 198.51.100.2.40000 [SA] seq 0 ack 1 len 0",
        " 0.000200 198.51.100.2.40000 > 198.51.100.1.7878 [PA] seq 1 ack 1 len 18",
    ]


def test_bench_prints_where_the_time_goes():
    """`python -m conformance bench -- SELECTION`: a benchmark anyone can rerun (no verdict on a time)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "bench",
            "--",
            "tests/cases/test_refused.py",
            "--targets",
            "c",
            "--families",
            "v4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for label in (
        "wall",
        "CPU",
        "sum of cases",
        "slowest case",
        "protocol waits",
        "pytest start",
        "wall / slowest case",
    ):
        assert re.search(rf"^{re.escape(label)} +\d+\.\d\d", proc.stdout, re.M), proc.stdout
    assert "tests/cases/test_refused.py::test_refused[v4-c]" in proc.stdout


def test_case_namespaces_have_small_socket_tables_of_their_own():
    """Made in the nursery (conformance/topology.py): a sock_diag dump walks 1024 buckets, not the
    host's shared table; the sysctls derived from a table's size are those of a namespace on the
    shared one (the kernel's tcp_set_hashinfo: max(128, entries / 128) for tcp_max_syn_backlog)."""
    from conformance.case import Net

    with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
        shared = abs(int(f.read()))
    net = Net()
    try:
        got = net.target.read_sysctls(["net.ipv4.tcp_ehash_entries", "net.ipv4.tcp_max_syn_backlog"])
        peer = net.peer.read_sysctls(["net.ipv4.tcp_ehash_entries"])
    finally:
        net.close()
    assert abs(int(got["net.ipv4.tcp_ehash_entries"])) == 1024 < shared, got
    assert abs(int(peer["net.ipv4.tcp_ehash_entries"])) == 1024, peer
    assert int(got["net.ipv4.tcp_max_syn_backlog"]) == max(128, shared // 128), got


def test_a_netlink_request_left_unanswered_fails_instead_of_waiting_forever():
    """conformance/netlink.py: a request whose answer never ends (a route lookup asked without an
    acknowledgement: the kernel sends the route and nothing after it) fails within the socket's
    timeout, naming the request, instead of hanging the case."""
    import socket
    import time

    from conformance.netlink import request
    from conformance.rtnl import _RTMSG, RTA_DST, RTM_GETROUTE, _attr

    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.settimeout(0.2)
        body = _RTMSG.pack(socket.AF_INET, 32, 0, 0, 0, 0, 0, 0, 0) + _attr(RTA_DST, socket.inet_aton("127.0.0.1"))
        start = time.monotonic()
        with pytest.raises(OSError, match=r"no answer in .* \(route get 127\.0\.0\.1\)"):
            request(sock, RTM_GETROUTE, 0, body, "route get 127.0.0.1")
    assert time.monotonic() - start < 5


def test_shaping_and_routes_read_back_what_they_set():
    """The rtnetlink requests of conformance/rtnl.py, read back through the kernel: tbf on the
    peer's veth with the rate, burst and limit asked for (as tc shows them), rto_min on both
    connected routes, a route lookup's errno, a neighbour entry's state."""
    import subprocess

    from conformance import shaping
    from conformance.case import Net

    with Net() as net:
        shaping.install(net.peer)
        shown = subprocess.run(
            ["ip", "netns", "exec", net.peer.ns, "tc", "-d", "qdisc", "show", "dev", net.peer.ifname],
            capture_output=True,
            text=True,
        ).stdout
        stats = shaping.stats(net.peer)
        shaping.remove(net.peer)
        after = shaping.stats(net.peer)
        rto = net.target.set_rto_min(0.3)
        unreachable = net.target.route_error("192.0.2.1")
        reachable = net.target.route_error(net.peer.addr("v6"))
        state = net.target.neighbour_state(net.peer.addr("v4"))
    # tc shows the limit as the time it takes to send: 256000 bytes at 125000 bytes/s
    assert "tbf 1: root" in shown and "rate 1Mbit burst 1600b" in shown and "lat 2.04s" in shown, shown
    assert stats["kind"] == "tbf" and stats["qlen"] == 0, stats
    assert after.get("kind") != "tbf", after
    assert set(rto.values()) == {300} and len(rto) == 2, rto
    assert (unreachable, reachable, state) == (101, None, "PERMANENT")
