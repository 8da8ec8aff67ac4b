"""Each case of the close group fails on a target that deviates in exactly the behaviour it checks.

Same method as tests/suite/test_deviants.py: the deviant target is the Python
agent with one operation replaced (tests/deviants/modes_close.py), registered
with --add-target. The checked case must fail on it, and a control case that
does not depend on the broken behaviour must still pass on the same target.
Only the two files holding the case and the control are collected.
"""
import pytest

from .helpers import deviant, run_suite

DEVIATIONS = [
    # mode, the case that must fail (-k), the control case that must pass (-k)
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

FILES = {
    "test_four_way_close": "test_four_way_close.py", "test_half_close": "test_four_way_close.py",
    "test_rebind": "test_rebind.py", "test_rst": "test_rst.py", "test_udp": "test_udp.py",
}


def case_file(name):
    for prefix, path in FILES.items():
        if name.startswith(prefix):
            return f"tests/cases/{path}"
    raise KeyError(name)


@pytest.mark.parametrize("mode,case,control", DEVIATIONS, ids=[f"{d[0]}-{d[1]}" for d in DEVIATIONS])
def test_close_case_fails_on_deviant_target(tmp_path, mode, case, control):
    files = sorted({case_file(case), case_file(control)})
    code, outcomes, output = run_suite(
        tmp_path, *files, "--targets", "deviant", "--add-target", deviant(mode), "--families", "v4",
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
