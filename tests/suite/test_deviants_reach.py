"""Each case of the reach group fails on a target that deviates in exactly the behaviour it checks.

Same method as tests/suite/test_deviants.py: the deviant target is the Python
agent with one operation replaced (tests/deviants/modes_reach.py), registered
with --add-target. The checked case must fail on it, and a control case that
does not depend on the broken behaviour must still pass on the same target.
Only the case files involved are collected, so the run does not depend on
other cases.
"""
import pytest

from .helpers import deviant, run_suite

FILES = {
    "test_unreachable": "tests/cases/test_unreachable.py",
    "test_abort_on_overflow": "tests/cases/test_abort_on_overflow.py",
    "test_blocking": "tests/cases/test_blocking.py",
    "test_refused": "tests/cases/test_refused.py",
    "test_handshake": "tests/cases/test_handshake.py",
}

DEVIATIONS = [
    # mode, the case that must fail, the control case that must pass (test function names)
    ("reach-hostunreach-as-timedout", "test_unreachable_host_icmp", "test_unreachable_no_route"),
    ("reach-hostunreach-as-timedout", "test_unreachable_on_link", "test_unreachable_net_icmp"),
    ("reach-netunreach-as-hostunreach", "test_unreachable_net_icmp", "test_unreachable_host_icmp"),
    ("reach-netunreach-as-hostunreach", "test_unreachable_no_route", "test_unreachable_on_link"),
    ("reach-eager-accept", "test_abort_on_overflow_rst", "test_refused"),
    ("reach-eager-accept", "test_abort_on_overflow_off", "test_refused"),
    ("reach-connect-nowait", "test_blocking_connect", "test_blocking_accept"),
    ("reach-accept-nowait", "test_blocking_accept", "test_blocking_connect"),
]


def case_file(name: str) -> str:
    return next(path for prefix, path in FILES.items() if name.startswith(prefix))


@pytest.mark.parametrize("mode,case,control", DEVIATIONS, ids=[f"{d[0]}-{d[1]}" for d in DEVIATIONS])
def test_reach_case_fails_on_deviant_target(tmp_path, mode, case, control):
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
