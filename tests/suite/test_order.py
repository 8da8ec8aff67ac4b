"""Longest cases first under pytest-xdist (pytest_tcp_conformance/order.py)."""

import json
from types import SimpleNamespace

from pytest_tcp_conformance import order


def items(*nodeids):
    return [SimpleNamespace(nodeid=n) for n in nodeids]


def ids(xs):
    return [x.nodeid for x in xs]


def test_longest_first_by_stored_duration():
    xs = items("a.py::t_fast[v4-c]", "a.py::t_slow[v4-c]", "a.py::t_mid[v4-c]")
    order.longest_first(xs, {"a.py::t_fast[v4-c]": 0.1, "a.py::t_slow[v4-c]": 3.2, "a.py::t_mid[v4-c]": 1.0})
    assert ids(xs) == ["a.py::t_slow[v4-c]", "a.py::t_mid[v4-c]", "a.py::t_fast[v4-c]"]


def test_a_case_not_on_record_takes_its_function_mean_else_the_median():
    known = {"a.py::t_slow[v4-c]": 3.0, "a.py::t_slow[v6-c]": 3.4, "a.py::t_fast[v4-c]": 0.1, "a.py::t_x[v4-c]": 0.5}
    # t_slow on a new target: about 3.2 s; t_new (no record at all): the median, 0.5 + 0.1... of all four
    xs = items("a.py::t_new[v4-node]", "a.py::t_fast[v4-node]", "a.py::t_slow[v4-node]")
    order.longest_first(xs, known)
    assert ids(xs) == ["a.py::t_slow[v4-node]", "a.py::t_new[v4-node]", "a.py::t_fast[v4-node]"]


def test_nothing_on_record_keeps_pytests_order():
    xs = items("b", "a", "c")
    order.longest_first(xs, {})
    assert ids(xs) == ["b", "a", "c"]


def test_the_committed_durations_are_a_map_of_existing_test_ids_to_seconds():
    stored = json.loads(order.COMMITTED.read_text())
    assert stored and all(isinstance(v, (int, float)) and v >= 0 for v in stored.values())
    assert all("::" in k for k in stored), "durations are keyed by pytest node id"


def test_only_the_conformance_cases_durations_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(order, "COMMITTED", tmp_path / "durations.json")
    recorder = order.DurationRecorder()
    for nodeid, seconds in (("tests/cases/test_a.py::t[v4-c]", 1.5), ("tests/suite/test_b.py::t", 90.0)):
        recorder.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, duration=seconds))
    recorder.pytest_sessionfinish(None)
    assert json.loads((tmp_path / "durations.json").read_text()) == {"tests/cases/test_a.py::t[v4-c]": 1.5}
