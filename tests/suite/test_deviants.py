"""Each conformance case fails on a target that deviates in exactly the behaviour it checks.

A deviant target (tests/deviants/agent.py) is the Python agent with one
behaviour broken, registered with --add-target like any outside agent. For
each deviation, the case that checks it must fail, and a case that checks
something else (the control) must still pass on the same deviant target.
"""
import pytest

from .helpers import deviant, run_suite

DEVIATIONS = [
    # mode, the cases that must fail (-k), the control case that must pass (-k)
    ("eager-accept", "test_handshake[", "test_refused"),
    ("fake-refused", "test_handshake_as_client", "test_handshake["),
    ("wrong-errno", "test_refused", "test_handshake["),
    ("fake-refused", "test_refused", "test_handshake["),
    ("client-timeout", "test_timedout", "test_refused"),
    ("big-backlog", "test_queue_full", "test_refused"),
    ("linger-close", "test_time_wait", "test_refused"),
]


@pytest.mark.parametrize("mode,case,control", DEVIATIONS, ids=[f"{d[0]}-{d[1].strip('[')}" for d in DEVIATIONS])
def test_case_fails_on_deviant_target(tmp_path, mode, case, control):
    code, outcomes, output = run_suite(
        tmp_path, "tests/cases", "--targets", "deviant", "--add-target", deviant(mode), "--families", "v4",
        "-k", f"{case.rstrip('[')} or {control.rstrip('[')}",
    )
    checked = {n: o for n, o in outcomes.items() if n.startswith(case)}
    controls = {n: o for n, o in outcomes.items() if n.startswith(control)}
    assert checked, f"no case {case} ran:\n{output}"
    assert all(o == "failed" for o in checked.values()), f"{case} did not fail on the {mode} deviant: {checked}\n{output}"
    assert controls and all(o == "passed" for o in controls.values()), \
        f"the control {control} must pass on the {mode} deviant: {controls}\n{output}"
    assert code == 1, f"pytest must exit 1 when a case fails, got {code}"
