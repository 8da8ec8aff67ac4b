"""Each conformance case fails on a target that deviates in exactly the behaviour it checks.

A deviant target (fixtures/deviants/agent.py) is the Python agent with one
operation replaced (fixtures/deviants/modes_*.py), registered with --add-target
like any outside agent. For each deviation, the case that checks it must fail,
and a case that checks something else (the control) must still pass on the
same deviant target. Only those two test functions run.
"""
import re

import pytest

from .helpers import ROOT, deviant, run_suite

DEVIATIONS = [
    # mode, the case that must fail, the control case that must pass (test functions)
    # -- the five mission cases
    ("eager-accept", "test_handshake", "test_refused"),
    ("fake-refused", "test_handshake_as_client", "test_handshake"),
    ("wrong-errno", "test_refused", "test_handshake"),
    ("fake-refused", "test_refused", "test_handshake"),
    ("client-timeout", "test_timedout", "test_refused"),
    ("ignore-syncnt", "test_timedout", "test_refused"),
    ("big-backlog", "test_queue_full", "test_refused"),
    ("linger-close", "test_time_wait_by_target", "test_refused"),
    ("linger-close", "test_time_wait_by_peer", "test_refused"),
    # -- accept, listen, ports, addresses, backlog
    ("accept-drops-early-data", "test_accept_data_before_accept", "test_listen_bound_refused"),
    ("accept-closes-listener", "test_accept_new_socket", "test_listen_bound_refused"),
    ("accept-fake-peer", "test_accept_new_socket", "test_listen_bound_refused"),
    ("accept-ignores-nonblock", "test_accept_nonblock", "test_accept_new_socket"),
    ("accept-listens-first", "test_listen_accept_einval", "test_accept_new_socket"),
    ("accept-bind-listens", "test_listen_bound_refused", "test_ephemeral_range"),
    ("accept-connect-fixed-port", "test_ephemeral_range", "test_accept_new_socket"),
    ("accept-bind-fixed-port", "test_ephemeral_port_zero", "test_accept_new_socket"),
    ("accept-wildcard-specific", "test_wildcard_any", "test_wildcard_specific"),
    ("accept-specific-wildcard", "test_wildcard_specific", "test_wildcard_any"),
    ("accept-backlog-ignored", "test_backlog_somaxconn", "test_ephemeral_range"),
    # -- unreachable outcomes, abort on overflow, blocking calls
    ("reach-hostunreach-as-timedout", "test_unreachable_host_icmp", "test_unreachable_no_route"),
    ("reach-hostunreach-as-timedout", "test_unreachable_on_link", "test_unreachable_net_icmp"),
    ("reach-netunreach-as-hostunreach", "test_unreachable_net_icmp", "test_unreachable_host_icmp"),
    ("reach-netunreach-as-hostunreach", "test_unreachable_no_route", "test_unreachable_on_link"),
    ("eager-accept", "test_abort_on_overflow_rst", "test_refused"),
    ("eager-accept", "test_abort_on_overflow_off", "test_refused"),
    ("eager-accept", "test_overflow_final_ack", "test_refused"),
    ("reach-connect-nowait", "test_blocking_connect", "test_blocking_accept"),
    ("reach-accept-nowait", "test_blocking_accept", "test_blocking_connect"),
    # -- close, rebind, RST, UDP
    ("close-leak", "test_four_way_close_target_active", "test_udp_no_handshake"),
    ("close-leak", "test_four_way_close_target_passive", "test_half_close"),
    ("close-eof-as-reset", "test_four_way_close_target_passive", "test_rst_linger_zero_received"),
    ("close-shutdown-rdwr", "test_half_close", "test_four_way_close_target_active"),
    ("close-eof-as-reset", "test_half_close_by_peer", "test_four_way_close_target_active"),
    ("close-reuseaddr-always", "test_rebind_time_wait_default", "test_rebind_time_wait_reuseaddr"),
    ("close-reuseaddr-always", "test_rebind_time_wait_new_only", "test_rebind_time_wait_reuseaddr"),
    ("close-reuseaddr-always", "test_rebind_time_wait_old_only", "test_rebind_time_wait_reuseaddr"),
    ("close-reuseaddr-ignored", "test_rebind_time_wait_reuseaddr", "test_rebind_time_wait_default"),
    ("close-linger-off-at-close", "test_rst_linger_zero", "test_rst_unread_data"),
    ("close-reset-as-eof", "test_rst_linger_zero_received", "test_rst_linger_zero"),
    ("close-drains-before-close", "test_rst_unread_data", "test_rst_linger_zero"),
    ("close-leak", "test_rst_no_connection", "test_rst_linger_zero_received"),
    ("close-udp-as-tcp", "test_udp_no_handshake", "test_four_way_close_target_active"),
    ("close-udp-fake-refused", "test_udp_refused", "test_udp_no_handshake"),
]


def node(function: str) -> str:
    """tests/cases/FILE.py::function, found by its definition."""
    for path in sorted((ROOT / "tests" / "cases").glob("test_*.py")):
        if re.search(rf"^def {function}\(", path.read_text(), re.M):
            return f"{path.relative_to(ROOT)}::{function}"
    raise LookupError(f"no case {function} in tests/cases")


@pytest.mark.parametrize("mode,case,control", DEVIATIONS, ids=[f"{d[0]}-{d[1]}" for d in DEVIATIONS])
def test_case_fails_on_deviant_target(tmp_path, mode, case, control):
    code, outcomes, output = run_suite(
        tmp_path, node(case), node(control), "--targets", "deviant", "--add-target", deviant(mode),
        "--families", "v4")
    checked = {n: o for n, o in outcomes.items() if n.startswith(case + "[")}
    controls = {n: o for n, o in outcomes.items() if n.startswith(control + "[")}
    assert checked, f"no case {case} ran:\n{output}"
    assert all(o == "failed" for o in checked.values()), f"{case} did not fail on the {mode} deviant: {checked}\n{output}"
    assert controls and all(o == "passed" for o in controls.values()), \
        f"the control {control} must pass on the {mode} deviant: {controls}\n{output}"
    assert code == 1, f"pytest must exit 1 when a case fails, got {code}"


def test_every_case_has_a_deviation():
    """A new case without a deviant that makes it fail is a case nobody has seen fail."""
    cases = {m for path in (ROOT / "tests" / "cases").glob("test_*.py")
             for m in re.findall(r"^def (test_\w+)\(", path.read_text(), re.M)}
    proven = {case for _, case, _ in DEVIATIONS}
    assert cases - proven == set(), f"cases with no deviant target proving they can fail: {sorted(cases - proven)}"
