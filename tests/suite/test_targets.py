"""Target selection, --add-target, usage errors, builds, and agents that misbehave."""
import re
import sys

import pytest

from conformance.agent import Agent, AgentError
from conformance.targets import BuildError, find_tool, parse_add_target, select_targets

from .helpers import ROOT, run_suite


def test_default_targets_are_the_builtins():
    assert list(select_targets(None, [])) == ["python", "c", "go"]


def test_targets_option_selects_and_orders():
    assert list(select_targets("go,python", [])) == ["go", "python"]


def test_add_target_is_selected_by_default_and_by_name():
    spec = "mine=/opt/agent --flag 'a b'"
    assert parse_add_target(spec).command == ["/opt/agent", "--flag", "a b"]
    assert list(select_targets(None, [spec])) == ["python", "c", "go", "mine"]
    assert list(select_targets("mine", [spec])) == ["mine"]


@pytest.mark.parametrize("targets,added,message", [
    ("python,rust", [], "unknown target(s) rust"),
    (",", [], "no target named"),
    (None, ["noequals"], "expected NAME=COMMAND"),
    (None, ["x="], "expected NAME=COMMAND"),
    (None, ["Bad Name=/bin/true"], "NAME must match"),
    (None, ["c=/bin/true"], "built-in target name"),
    (None, ["a=/bin/true", "a=/bin/false"], "given twice"),
    (None, ["q=/bin/echo 'unterminated"], "No closing quotation"),
])
def test_bad_target_options(targets, added, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_targets(targets, added)


def test_bad_option_is_a_usage_error_before_any_namespace(tmp_path):
    code, outcomes, output = run_suite(tmp_path, "tests/cases", "--targets", "python,nosuch")
    assert code == 4, output  # pytest's usage error
    assert "unknown target(s) nosuch" in output
    assert not outcomes


def test_missing_compiler_names_the_tool(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BuildError, match=r"`gcc` not found on PATH: install it \(Debian: `apt-get install gcc`"):
        find_tool("gcc", "gcc")


FAKE = {
    "hangs": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport time\ntime.sleep(60)",
    "crashes": "import sys\nprint('ready proto=1 lang=fake version=1 pid=1', flush=True)\nsys.stdin.readline()\n"
               "sys.stderr.write('fake agent: segfault in connect\\n')\nsys.exit(139)",
    "garbage": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport sys\nsys.stdin.readline()\n"
               "print('HELLO THERE', flush=True)\nimport time\ntime.sleep(60)",
    "badhandle": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport sys\nsys.stdin.readline()\n"
                 "sys.stderr.write('fake agent: handle table corrupted\\n')\nprint('proto badhandle msg=no%20handle%201', flush=True)\n"
                 "import time\ntime.sleep(60)",
    "floods": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport sys\nsys.stdin.readline()\n"
              "sys.stdout.write('x' * (3 << 20))\nsys.stdout.flush()\nimport time\ntime.sleep(60)",
    "silent": "import time\ntime.sleep(60)",
    "exits": "import sys\nsys.stderr.write('cannot start: missing library\\n')\nsys.exit(3)",
}


@pytest.mark.parametrize("kind,reason", [
    ("hangs", "no reply within 0.5 s: agent hung, killed"),
    ("crashes", "agent exited (status 139) before replying"),
    ("garbage", "malformed reply 'HELLO THERE'"),
    ("floods", "without a newline (flood)"),
    ("badhandle", "protocol error from the agent: proto badhandle"),
])
def test_misbehaving_agent_is_killed_and_reported(tmp_path, kind, reason):
    script = tmp_path / f"{kind}.py"
    script.write_text(FAKE[kind])
    agent = Agent(kind, [sys.executable, str(script)])
    try:
        with pytest.raises(AgentError) as info:
            agent.call("socket tcp inet", deadline=0.5 if kind == "hangs" else 10)
        text = str(info.value)
        assert f"target {kind}: " in text and reason in text and "socket tcp inet" in text
        if kind == "crashes":
            assert "segfault in connect" in text, "the stderr tail must be shown"
        if kind == "badhandle":
            assert "handle table corrupted" in text, "the stderr tail must be shown"
        assert agent.proc.poll() is not None, "the agent must be gone"
    finally:
        agent.stop()


@pytest.mark.parametrize("kind,reason", [
    ("silent", "no reply within"),
    ("exits", "agent exited (status 3)"),
])
def test_agent_that_never_gets_ready(tmp_path, monkeypatch, kind, reason):
    import conformance.agent as agent_mod

    if kind == "silent":  # only the one that never answers waits out the deadline
        monkeypatch.setattr(agent_mod, "START_DEADLINE", 0.5)
    script = tmp_path / f"{kind}.py"
    script.write_text(FAKE[kind])
    with pytest.raises(AgentError, match=re.escape(reason)) as info:
        Agent(kind, [sys.executable, str(script)])
    if kind == "exits":
        assert "cannot start: missing library" in str(info.value)


def test_broken_target_fails_its_cases_and_the_session_goes_on(tmp_path):
    script = tmp_path / "crashes.py"
    script.write_text(FAKE["crashes"])
    code, outcomes, output = run_suite(
        tmp_path, "tests/cases/test_refused.py", "--families", "v4",
        "--targets", "broken,python", "--add-target", f"broken={sys.executable} {script}")
    assert outcomes == {"test_refused[v4-broken]": "failed", "test_refused[v4-python]": "passed"}, output
    assert "target broken: agent exited (status 139)" in output
    assert code == 1


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line.strip() for line in ci.splitlines() if line.strip().startswith("bash ci/setup.sh"))
    assert command in readme, f"README.md must show the command .ci/run runs: {command}"
