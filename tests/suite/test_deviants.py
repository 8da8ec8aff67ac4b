"""Each conformance case fails on a target that deviates in exactly the behaviour it checks.

A deviant target (fixtures/deviants/agent.py) is the Python agent with one
operation replaced (fixtures/deviants/modes_*.py), registered with --add-target
like any outside agent. For each deviation, the case that checks it must fail,
and a case that checks something else (the control) must still pass on the
same deviant target. Only those two test functions run.
"""

import functools
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from .helpers import ROOT, deviant, run_suite

DEVIATIONS = [
    # mode, the case that must fail, the control case that must pass (matrix rows, no family)
    # -- the five mission cases
    ("eager-accept", "handshake", "refused"),
    ("fake-refused", "handshake_as_client", "handshake"),
    ("wrong-errno", "refused", "handshake"),
    ("fake-refused", "refused", "handshake"),
    ("client-timeout", "timedout", "refused"),
    ("ignore-syncnt", "timedout", "refused"),
    ("big-backlog", "queue_full", "refused"),
    ("linger-close", "time_wait_by_target", "refused"),
    ("linger-close", "time_wait_by_peer", "refused"),
    # -- accept, listen, ports, addresses, backlog
    ("accept-drops-early-data", "accept_data_before_accept", "listen_bound_refused"),
    ("accept-closes-listener", "accept_new_socket", "listen_bound_refused"),
    ("accept-fake-peer", "accept_new_socket", "listen_bound_refused"),
    ("accept-ignores-nonblock", "accept_nonblock", "accept_new_socket"),
    ("accept-listens-first", "listen_accept_einval", "accept_new_socket"),
    ("accept-bind-listens", "listen_bound_refused", "ephemeral_range"),
    ("accept-connect-fixed-port", "ephemeral_range", "accept_new_socket"),
    ("accept-bind-fixed-port", "ephemeral_port_zero", "accept_new_socket"),
    ("accept-wildcard-specific", "wildcard_any", "wildcard_specific"),
    ("accept-specific-wildcard", "wildcard_specific", "wildcard_any"),
    ("accept-backlog-ignored", "backlog_somaxconn", "ephemeral_range"),
    # -- unreachable outcomes, abort on overflow, blocking calls
    ("reach-hostunreach-as-timedout", "unreachable_host_icmp", "unreachable_no_route"),
    ("reach-hostunreach-as-timedout", "unreachable_on_link", "unreachable_net_icmp"),
    ("reach-netunreach-as-hostunreach", "unreachable_net_icmp", "unreachable_host_icmp"),
    ("reach-netunreach-as-hostunreach", "unreachable_no_route", "unreachable_on_link"),
    ("eager-accept", "abort_on_overflow_rst", "refused"),
    ("eager-accept", "abort_on_overflow_off", "refused"),
    ("eager-accept", "overflow_final_ack", "refused"),
    ("reach-connect-nowait", "blocking_connect", "blocking_accept"),
    ("reach-accept-nowait", "blocking_accept", "blocking_connect"),
    # -- close, rebind, RST, UDP
    ("close-leak", "four_way_close_target_active", "udp_no_handshake"),
    ("close-leak", "four_way_close_target_passive", "half_close"),
    ("close-eof-as-reset", "four_way_close_target_passive", "rst_linger_zero_received"),
    ("close-shutdown-rdwr", "half_close", "four_way_close_target_active"),
    ("close-eof-as-reset", "half_close_by_peer", "four_way_close_target_active"),
    ("close-reuseaddr-always", "rebind_time_wait_default", "rebind_time_wait_reuseaddr"),
    ("close-reuseaddr-always", "rebind_time_wait_new_only", "rebind_time_wait_reuseaddr"),
    ("close-reuseaddr-always", "rebind_time_wait_old_only", "rebind_time_wait_reuseaddr"),
    ("close-reuseaddr-ignored", "rebind_time_wait_reuseaddr", "rebind_time_wait_default"),
    ("close-linger-off-at-close", "rst_linger_zero", "rst_unread_data"),
    ("close-reset-as-eof", "rst_linger_zero_received", "rst_linger_zero"),
    ("close-drains-before-close", "rst_unread_data", "rst_linger_zero"),
    ("close-leak", "rst_no_connection", "rst_linger_zero_received"),
    ("close-udp-as-tcp", "udp_no_handshake", "four_way_close_target_active"),
    ("close-udp-fake-refused", "udp_refused", "udp_no_handshake"),
    # -- issue 11: hb
    ("hb-backlog-plus-one", "queue_full", "handshake_as_client"),
    ("hb-backlog-plus-one", "abort_on_overflow_off", "handshake_as_client"),
    ("big-backlog", "abort_on_overflow_rst", "handshake_as_client"),
    ("close-leak", "time_wait_by_target", "handshake"),
    ("linger-close", "four_way_close_target_active", "handshake"),
    ("linger-close", "rebind_time_wait_default", "handshake"),
    ("hb-close-aborts-after-eof", "time_wait_by_peer", "time_wait_by_target"),
    ("hb-close-aborts-after-eof", "four_way_close_target_passive", "time_wait_by_target"),
    ("hb-close-aborts-after-eof", "half_close_by_peer", "half_close"),
    ("hb-shutdown-closes", "half_close", "time_wait_by_target"),
    ("hb-reuseaddr-at-listen", "rebind_time_wait_reuseaddr", "rebind_time_wait_default"),
    ("hb-reuseaddr-at-listen", "rebind_time_wait_new_only", "rebind_time_wait_old_only"),
    ("hb-linger-ignored", "rst_no_connection", "rst_unread_data"),
    ("hb-nonblock-ignored", "accept_nonblock", "accept_new_socket"),
    ("accept-bind-listens", "listen_accept_einval", "ephemeral_range"),
    ("hb-bind-loopback", "wildcard_any", "handshake_as_client"),
    ("hb-bind-loopback", "wildcard_specific", "handshake_as_client"),
    ("hb-getsockname-flips", "ephemeral_range", "handshake"),
    ("hb-getsockname-flips", "ephemeral_port_zero", "handshake"),
    # -- issue 11: ha
    ("ha-refused-retry-later", "refused", "handshake_as_client"),
    ("ha-refused-retry-at-once", "refused", "handshake_as_client"),
    ("ha-refused-late", "refused", "handshake_as_client"),
    ("ha-numeric-errno", "refused", "handshake_as_client"),
    ("ha-syncnt-off-by-one", "timedout", "refused"),
    ("ha-udp-connect-unbound", "udp_refused", "udp_no_handshake"),
    ("ha-connect-ignores-timeout", "connect_timeout", "refused"),
    # -- issue 12: each language's default backlog
    ("listen-default-zero", "listen_default", "refused"),
    # -- issue 12: a runtime that accepts or reads on its own (Node's event loop)
    ("reads-ahead-udp", "udp_no_handshake", "udp_refused"),
    ("reads-ahead", "rst_unread_data", "rst_linger_zero"),
]

# What the first failing assertion must say for these deviations: the deviation, not a symptom.
NAMED = [
    ("eager-accept", "handshake", "the runtime accepted the connection from port"),
    ("reads-ahead-udp", "udp_no_handshake", "the runtime read the datagram before recv() was called"),
    ("reads-ahead", "rst_unread_data", "bytes before recv() was called: the target's kernel acknowledged them"),
]


@functools.cache
def case_ids() -> dict[str, str]:
    """Every conformance case's matrix row (no family) -> its v4 test id on a target named `deviant`, from
    pytest's own collection:
    "time_wait_by_target" -> "tests/cases/test_time_wait.py::test_time_wait[v4-deviant-by_target]"."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "tests/cases",
            "--targets",
            "python",
            "--families",
            "v4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = {}
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"(tests/cases/\S+\.py)::(test_\w+)\[(.*)\]", line.strip())
        if m:
            path, function, ids = m.group(1), m.group(2), m.group(3).split("-")
            variants = [i for i in ids if i not in ("v4", "python")]
            row = "_".join([function.removeprefix("test_"), *variants])
            out[row] = f"{path}::{function}[{'-'.join('deviant' if i == 'python' else i for i in ids)}]"
    assert out, f"no conformance case collected:\n{proc.stdout}{proc.stderr}"
    return out


def node(row: str) -> str:
    try:
        return case_ids()[row]
    except KeyError:
        raise LookupError(f"no case with the matrix row {row!r} in tests/cases") from None


def fails_beside_control(tmp_path, case: str, control: str, what: str, *target_args) -> int:
    """Run `case` and `control` (matrix rows, v4) on the deviant target `target_args` select: the case must
    fail and the control pass (the deviant is otherwise a working agent). Returns pytest's exit code."""
    checked_id, control_id = node(case), node(control)
    code, outcomes, output = run_suite(tmp_path, checked_id, control_id, *target_args, "--families", "v4")
    checked = outcomes.get(checked_id.split("::")[1])
    controlled = outcomes.get(control_id.split("::")[1])
    assert checked == "failed", f"{case} did not fail on the {what}: {checked}\n{output}"
    assert controlled == "passed", f"the control {control} must pass on the {what}: {controlled}\n{output}"
    return code


@pytest.mark.parametrize("mode,case,control", DEVIATIONS, ids=[f"{d[0]}-{d[1]}" for d in DEVIATIONS])
def test_case_fails_on_deviant_target(tmp_path, mode, case, control):
    args = ("--targets", "deviant", "--add-target", deviant(mode))
    code = fails_beside_control(tmp_path, case, control, f"{mode} deviant", *args)
    assert code == 1, f"pytest must exit 1 when a case fails, got {code}"


@pytest.mark.parametrize("mode,case,message", NAMED, ids=[f"{d[0]}-{d[1]}" for d in NAMED])
def test_deviation_is_named(tmp_path, mode, case, message):
    checked_id = node(case)
    code, outcomes, output = run_suite(
        tmp_path, checked_id, "--targets", "deviant", "--add-target", deviant(mode), "--families", "v4"
    )
    assert outcomes.get(checked_id.split("::")[1]) == "failed", f"{case} did not fail on {mode}:\n{output}"
    failures = [f.get("message", "") for f in ET.parse(tmp_path / "junit.xml").getroot().iter("failure")]
    first = failures[0].splitlines()[0] if failures else ""
    assert message in first, f"{case} on {mode} must fail first saying {message!r}, said: {first}\n{output}"


# A deviant netstack: the built-in netstack agent behind fixtures/deviants/netstack_wrapper.py, which
# changes one operation; a target file with link = "packet" runs it as a userspace stack.
NETSTACK_DEVIATIONS = [
    # mode, the case that must fail, the control case that must pass
    ("linger-close", "time_wait_by_target", "refused"),
    ("fake-refused", "handshake_as_client", "handshake"),
]


@pytest.mark.parametrize("mode,case,control", NETSTACK_DEVIATIONS, ids=[f"{d[0]}-{d[1]}" for d in NETSTACK_DEVIATIONS])
def test_case_fails_on_deviant_netstack(tmp_path, mode, case, control):
    from conformance.targets import builtin_targets

    (agent,) = builtin_targets()["netstack"].argv()  # built (cached) as for the built-in target
    wrapper = ROOT / "fixtures" / "deviants" / "netstack_wrapper.py"
    target_file = tmp_path / "deviant.toml"
    command = [sys.executable, "-I", "-S", str(wrapper), "--mode", mode, agent]
    target_file.write_text(f'[[target]]\nname = "deviant"\ncommand = {command!r}\nlink = "packet"\n'.replace("'", '"'))
    args = ("--targets", "deviant", "--target-file", str(target_file))
    fails_beside_control(tmp_path, case, control, f"{mode} netstack deviant", *args)
    assert "evidence_source" in (tmp_path / "junit.xml").read_text(), "the deviant's evidence is not the stack's"


def test_every_case_has_a_deviation():
    """A new case without a deviant that makes it fail is a case nobody has seen fail."""
    cases = set(case_ids())
    proven = {case for _, case, _ in DEVIATIONS}
    assert proven - cases == set(), f"deviations name cases that do not exist: {sorted(proven - cases)}"
    assert cases - proven == set(), f"cases with no deviant target proving they can fail: {sorted(cases - proven)}"
