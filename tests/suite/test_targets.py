"""Target selection, --add-target, usage errors, builds, and agents that misbehave."""

import ast
import re
import sys

import pytest

from conformance.agent import Agent, AgentError
from conformance.targets import (
    BUILTIN,
    DEBIAN_BASES,
    LINKS,
    OPT_IN,
    BuildError,
    builtin_targets,
    find_tool,
    load_target_file,
    parse_add_target,
    select_targets,
)

from .helpers import ROOT, run_suite


def test_default_targets_are_the_builtins():
    # What is built in, stated once: everything else (the CLI default, the CI matrix, the
    # Docker images) derives from the records of conformance/targets.py.
    assert BUILTIN == ("python", "c", "go", "rust", "java", "node")
    assert list(select_targets(None, [])) == list(BUILTIN)


def test_a_builtin_target_record_owns_its_build_and_its_image():
    for name, target in builtin_targets().items():
        assert target.name == name and target.builtin
        assert bool(target.build) != bool(target.command), f"{name}: a command or a build, not both"
        assert target.link in LINKS
        if target.link == "packet":  # a userspace stack: the Docker runner cannot pass it the packet socket
            assert target.image is None and not target.default, f"{name}: an image it could not run in"
            continue
        assert target.image is not None, f"{name}: no image recipe for --runner docker"
        assert target.image.base in ("scratch", *DEBIAN_BASES) and target.image.entrypoint


def test_opt_in_builtins_run_when_named():
    """A built-in with default=False (netstack: minutes to build cold) is not in the default selection
    but is one --targets can name, and --add-target cannot take its name."""
    assert OPT_IN and not set(OPT_IN) & set(BUILTIN)
    assert set(builtin_targets()) == {*BUILTIN, *OPT_IN}
    for name in OPT_IN:
        assert list(select_targets(name, [])) == [name]
        with pytest.raises(ValueError, match="built-in target name"):
            select_targets(None, [f"{name}=/bin/true"])


def test_target_file_link(tmp_path):
    """`link = "packet"` in a target file makes a userspace-stack target; anything but kernel/packet is refused."""
    path = tmp_path / "t.toml"
    path.write_text('[[target]]\nname = "stack"\ncommand = "/opt/stack"\nlink = "packet"\n')
    (t,) = load_target_file(str(path))
    assert t.link == "packet"
    path.write_text('[[target]]\nname = "stack"\ncommand = "/opt/stack"\nlink = "raw"\n')
    with pytest.raises(ValueError, match="`link` must be one of kernel, packet"):
        load_target_file(str(path))


def test_added_target_without_image_recipe_cannot_run_in_docker():
    from conformance.docker_runner import DockerRunner, DockerUnavailable

    for target in (parse_add_target("mine=/opt/agent"), "mine"):
        with pytest.raises(DockerUnavailable, match="target mine has no image recipe"):
            DockerRunner().image(target)


def builtin_name_lists(source: str) -> list[str]:
    """The literal tuples/lists/sets of two or more built-in target names in Python source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # (a file mid-edit: fall back to its text)
        item = r"""\s*['"](?:{})['"]\s*""".format("|".join(map(re.escape, BUILTIN)))
        return [m.group(0) for m in re.finditer(rf"[(\[{{]{item}(?:,{item})+,?\s*[)\]}}]", source)]

    def names(node):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in BUILTIN}

    return [
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(names(node)) >= 2
    ]


def test_builtin_target_names_are_listed_only_in_the_target_records():
    as_set = "{" + ", ".join(map(repr, BUILTIN)) + "}"
    for sample in (f"x = {BUILTIN!r}", f"if name in {as_set}: pass", f"x = {list(BUILTIN[:2])!r}"):
        assert builtin_name_lists(sample), f"the check must see {sample}"
        assert builtin_name_lists(sample + " (unparsable"), f"the text fallback must see {sample}"
    assert not builtin_name_lists(f"x = {BUILTIN[0]!r}\ny = ('v4', 'v6')\n")
    found = {}
    for top in ("conformance", "pytest_tcp_conformance", "tests/cases"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "conformance" / "targets.py":
                continue
            hits = builtin_name_lists(path.read_text())
            if hits:
                found[str(path.relative_to(ROOT))] = hits
    assert not found, f"built-in target names listed outside conformance/targets.py (use BUILTIN): {found}"


def test_targets_option_selects_and_orders():
    assert list(select_targets("go,python", [])) == ["go", "python"]


def test_add_target_is_selected_by_default_and_by_name():
    spec = "mine=/opt/agent --flag 'a b'"
    assert parse_add_target(spec).command == ["/opt/agent", "--flag", "a b"]
    assert list(select_targets(None, [spec])) == [*BUILTIN, "mine"]
    assert list(select_targets("mine", [spec])) == ["mine"]


@pytest.mark.parametrize(
    "targets,added,message",
    [
        ("python,cobol", [], "unknown target(s) cobol"),
        (",", [], "no target named"),
        (None, ["noequals"], "expected NAME=COMMAND"),
        (None, ["x="], "expected NAME=COMMAND"),
        (None, ["Bad Name=/bin/true"], "NAME must match"),
        (None, ["c=/bin/true"], "built-in target name"),
        (None, ["a=/bin/true", "a=/bin/false"], "given twice"),
        (None, ["q=/bin/echo 'unterminated"], "No closing quotation"),
    ],
)
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
    "sys.stderr.write('fake agent: handle table corrupted\\n')\n"
    "print('proto badhandle msg=no%20handle%201', flush=True)\n"
    "import time\ntime.sleep(60)",
    "floods": "print('ready proto=1 lang=fake version=1 pid=1', flush=True)\nimport sys\nsys.stdin.readline()\n"
    "sys.stdout.write('x' * (3 << 20))\nsys.stdout.flush()\nimport time\ntime.sleep(60)",
    "silent": "import time\ntime.sleep(60)",
    "exits": "import sys\nsys.stderr.write('cannot start: missing library\\n')\nsys.exit(3)",
}


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("hangs", "no reply within 0.5 s: agent hung, killed"),
        ("crashes", "agent exited (status 139) before replying"),
        ("garbage", "malformed reply 'HELLO THERE'"),
        ("floods", "without a newline (flood)"),
        ("badhandle", "protocol error from the agent: proto badhandle"),
    ],
)
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


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("silent", "no reply within"),
        ("exits", "agent exited (status 3)"),
    ],
)
def test_agent_that_never_gets_ready(tmp_path, kind, reason):
    script = tmp_path / f"{kind}.py"
    script.write_text(FAKE[kind])
    # only the one that never answers waits out the deadline
    with pytest.raises(AgentError, match=re.escape(reason)) as info:
        Agent(kind, [sys.executable, str(script)], deadline=0.5 if kind == "silent" else 10)
    if kind == "exits":
        assert "cannot start: missing library" in str(info.value)


def test_broken_target_fails_its_cases_and_the_session_goes_on(tmp_path):
    script = tmp_path / "crashes.py"
    script.write_text(FAKE["crashes"])
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "broken,python",
        "--add-target",
        f"broken={sys.executable} {script}",
    )
    assert outcomes == {"test_refused[v4-broken]": "failed", "test_refused[v4-python]": "passed"}, output
    assert "target broken: agent exited (status 139)" in output
    assert code == 1


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line.strip() for line in ci.splitlines() if line.strip().startswith("bash ci/setup.sh"))
    assert command in readme, f"README.md must show the command .ci/run runs: {command}"


def test_opt_in_builtins_are_run_by_ci_and_shown_in_the_readme():
    """A built-in outside the default selection still gets its catalogue column in CI, and the README
    says how to run it."""
    readme = (ROOT / "README.md").read_text()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    for name in OPT_IN:
        assert any(line.startswith("python3 -m pytest tests/cases") and f"--targets {name}" in line for line in ci), (
            f".ci/run does not run {name}'s catalogue"
        )
        assert f"python3 -m pytest tests/cases --targets {name}" in readme, f"README.md does not show how to run {name}"


def test_a_target_defined_in_a_file_runs_and_is_recorded(tmp_path):
    """A target file gives name, command (relative files from its folder), variant and a build step;
    the results record every target's command and variant."""
    import json

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "targets.toml").write_text(
        "[[target]]\n"
        'name = "mine"\n'
        f'command = ["{sys.executable}", "-I", "-S", "agent.py"]\n'
        'variant = "the Python agent, copied by a build step"\n'
        f'build = "cp {ROOT}/targets/python/agent.py agent.py"\n'
    )
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "mine,c",
        "--target-file",
        str(folder / "targets.toml"),
        "--results-json",
        str(tmp_path / "r.json"),
    )
    assert code == 0 and outcomes == {"test_refused[v4-mine]": "passed", "test_refused[v4-c]": "passed"}, output
    targets = json.loads((tmp_path / "r.json").read_text())["targets"]
    assert targets["mine"]["variant"] == "the Python agent, copied by a build step"
    assert targets["mine"]["command"].endswith(f"-I -S {folder / 'agent.py'}")
    assert targets["c"]["command"].startswith("/") and "c-agent-" in targets["c"]["command"]


@pytest.mark.parametrize(
    "content,message",
    [
        ('[[target]]\nname = "x"\n', "`command` must be a string or a list of strings"),
        ('[[target]]\nname = "Bad Name"\ncommand = "true"\n', "`name` must match"),
        ('[[target]]\nname = "c"\ncommand = "true"\n', "'c' is defined twice"),
        ('[[target]]\nname = "x"\ncommand = "true"\ncolour = 1\n', "keys must be among"),
        ('[[target]]\nname = "x"\ncommand = "true"\nbuild = "exit 3"\n', "its build step `exit 3` failed (exit 3)"),
        ("[[target]\n", "--target-file"),
    ],
)
def test_bad_target_files_are_usage_errors(tmp_path, content, message):
    path = tmp_path / "t.toml"
    path.write_text(content)
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--target-file", str(path))
    assert code == 4 and message in output and not outcomes, output
