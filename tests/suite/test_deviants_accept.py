"""Each case of the accept group fails on a target that deviates in exactly the behaviour it checks.

Same method as tests/suite/test_deviants.py: the deviant target is the Python
agent with one operation replaced (tests/deviants/modes_accept.py), registered
with --add-target. The checked case must fail on it, and a control case that
does not depend on the broken behaviour must still pass on the same target.
"""
import pytest

from .helpers import deviant, run_suite

DEVIATIONS = [
    # mode, the case that must fail (-k), the control case that must pass (-k)
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
]


@pytest.mark.parametrize("mode,case,control", DEVIATIONS, ids=[f"{d[0]}-{d[1]}" for d in DEVIATIONS])
def test_accept_case_fails_on_deviant_target(tmp_path, mode, case, control):
    code, outcomes, output = run_suite(
        tmp_path, "tests/cases", "--targets", "deviant", "--add-target", deviant(mode), "--families", "v4",
        "-k", f"{case} or {control}",
    )
    checked = {n: o for n, o in outcomes.items() if n.startswith(case + "[")}
    controls = {n: o for n, o in outcomes.items() if n.startswith(control + "[")}
    assert checked, f"no case {case} ran:\n{output}"
    assert all(o == "failed" for o in checked.values()), \
        f"{case} did not fail on the {mode} deviant: {checked}\n{output}"
    assert controls and all(o == "passed" for o in controls.values()), \
        f"the control {control} must pass on the {mode} deviant: {controls}\n{output}"
    assert code == 1, f"pytest must exit 1 when a case fails, got {code}"
