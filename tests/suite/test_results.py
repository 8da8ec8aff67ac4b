"""Results people can read, keep and compare: matrix, JSON, HTML, pcaps, JUnit, declared differences."""

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from conformance import compare, expectations, matrix
from conformance.capture import read_pcap
from conformance.results import SCHEMA, VERSION

from .helpers import ROOT, deviant, run_suite


@pytest.fixture(scope="module")
def refused_run(tmp_path_factory):
    """One real run of the refused case on python and c, with every output switched on."""
    tmp = tmp_path_factory.mktemp("run")
    code, outcomes, output = run_suite(
        tmp,
        "tests/cases/test_refused.py",
        "--targets",
        "python,c",
        "--keep-pcaps",
        "--results-json",
        str(tmp / "r.json"),
        "--html",
        str(tmp / "r.html"),
    )
    assert code == 0, output
    return tmp, json.loads((tmp / "r.json").read_text()), output


def test_terminal_matrix(refused_run):
    _, _, output = refused_run
    lines = output.splitlines()
    start = lines.index(next(line for line in lines if "TCP conformance matrix" in line))
    table = lines[start + 1 : start + 4]
    assert table[0].split() == ["behaviour", "python", "c"]
    assert table[1].startswith("refused v4") and table[1].count("pass ECONNREFUSED") == 2
    assert all(len(line) <= 100 for line in lines[start + 1 : start + 6])


def test_results_json_schema(refused_run):
    _, doc, _ = refused_run
    assert doc["schema"] == SCHEMA and doc["version"] == VERSION
    assert doc["kernel"] == os.uname().release
    assert doc["targets"]["python"]["runtime"] and doc["targets"]["c"]["runtime"].startswith("gcc")
    assert {(r["case"], r["target"]) for r in doc["results"]} == {
        (f"refused {f}", t) for f in ("v4", "v6") for t in ("python", "c")
    }
    for r in doc["results"]:
        assert r["verdict"] == "pass" and r["key"] == "ECONNREFUSED"
        assert float(r["observed"]["connect_ms"]) >= 0
        assert any("[RA]" in line for line in r["evidence"]["wire"])
        assert ["socket tcp " + ("inet" if r["family"] == "v4" else "inet6")] == [
            c for c, _ in r["evidence"]["transcript"] if c.startswith("socket")
        ]
        assert r["evidence"]["sysctls"]["net.ipv4.tcp_syn_retries"] == "6"
        assert r["runtime"] == doc["targets"][r["target"]]["runtime"]


def test_pcaps_are_kept_and_read_back(refused_run):
    _, doc, _ = refused_run
    for r in doc["results"]:
        segments = read_pcap(r["pcap"])
        syn = [s for s in segments if s.proto == "tcp" and s.flags == "S"]
        rst = [s for s in segments if s.proto == "tcp" and s.flags == "RA"]
        assert syn and rst and rst[0].ack == (syn[0].seq + 1) % 2**32


def test_pcap_kept_only_on_failure_by_default(tmp_path):
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "python,dev",
        "--add-target",
        deviant("wrong-errno", "dev"),
    )
    kept = sorted(os.listdir(tmp_path / "pcaps"))
    assert kept == ["test_refused[v4-dev].pcap"], output
    assert f"pcap files: {tmp_path / 'pcaps'}" in output


def test_html_renders_in_headless_chromium(refused_run, tmp_path):
    if not browser():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: ci/setup.sh should have installed it")
        pytest.skip("Debian's chromium is not installed (bash ci/setup.sh installs it)")
    run_dir, doc, _ = refused_run
    page = run_dir / "r.html"
    dom = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri() + "#e1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert '<table class="matrix" id="matrix">' in dom
    assert dom.count("pass ECONNREFUSED") >= 4
    assert '<details id="e1" open="">' in dom, "a cell's link must open its evidence"
    assert "[RA]" in dom and "connect 1 198.51.100.2 9 none" in dom
    assert "http://" not in dom.split("<body>")[1] and "<link" not in dom, "the page must be self-contained"


def test_junit_has_readable_names_and_observed_properties(tmp_path):
    code, _, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--targets", "python", "--families", "v4")
    case = next(ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"))
    assert case.get("name") == "test_refused[v4-python]"
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["key"] == "ECONNREFUSED" and props["target"] == "python" and props["errno"] == "ECONNREFUSED"
    assert "runtime" in props and "connect_ms" in props


def _doc(cells, profile="linux-default"):
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "kernel": "6.18",
        "profile": profile,
        "sysctls": {},
        "targets": {},
        "results": [{"case": c, "target": t, "verdict": v, "key": k, "detail": "1ms"} for c, t, v, k in cells],
    }


def browser() -> str | None:
    """Debian's chromium, or Chrome where it is the browser at hand (Ubuntu's runners)."""
    return shutil.which("chromium") or shutil.which("google-chrome")


def test_compare_lists_differences_and_missing_cells(tmp_path):
    a = _doc(
        [
            ("refused v4", "python", "pass", "ECONNREFUSED"),
            ("queue_full v4", "go", "pass", "q=2"),
            ("timedout v4", "c", "pass", "ETIMEDOUT"),
        ]
    )
    b = _doc(
        [
            ("refused v4", "python", "pass", "ECONNREFUSED"),
            ("queue_full v4", "go", "FAIL", "q=4097"),
            ("timedout v4", "rust", "pass", "ETIMEDOUT"),
        ]
    )
    pa, pb = tmp_path / "a.json", tmp_path / "b.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    rows = compare.diff(a, b)
    assert [(r[0], r[1]) for r in rows] == [("queue_full v4", "go"), ("timedout v4", "c"), ("timedout v4", "rust")]
    lines = []
    assert compare.main(str(pa), str(pb), out=lines.append) == 1
    assert lines[-1] == "3 of 4 case/target cells differ (2 missing on one side)"
    assert any("pass q=2" in line and "FAIL q=4097" in line for line in lines)
    assert any("(missing)" in line for line in lines)
    assert compare.main(str(pa), str(pb), exit_zero=True, out=lines.append) == 0
    assert compare.main(str(pa), str(pa), out=lines.append) == 0
    cli = subprocess.run(
        [sys.executable, "-m", "conformance", "compare", str(pa), str(pb)], cwd=ROOT, capture_output=True, text=True
    )
    assert cli.returncode == 1 and "queue_full v4" in cli.stdout
    pb.write_text("{}")
    cli = subprocess.run(
        [sys.executable, "-m", "conformance", "compare", str(pa), str(pb)], cwd=ROOT, capture_output=True, text=True
    )
    assert cli.returncode == 2 and "not a results file" in cli.stderr


def test_matrix_fits_100_columns_for_three_targets():
    recs = [
        {
            "case": f"some_rather_long_behaviour_name v{i}",
            "target": t,
            "verdict": "skip",
            "reason": "`nonblock` is unsupported: Go has no non-blocking sockets",
            "key": "",
            "detail": "",
        }
        for i in (4, 6)
        for t in ("python", "c", "go")
    ]
    text = matrix.render(recs, ["python", "c", "go"])
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "skip `nonblock` is" in text


DECLARED = """# test file
[[difference]]
target = "dev"
case = "test_refused"
families = ["v4"]
reason = "this deviant reports ECONNRESET"
"""


def test_declared_difference_is_shown_not_failed(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text(DECLARED)
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "dev",
        "--add-target",
        deviant("wrong-errno", "dev"),
        "--expectations",
        str(exp),
        "--results-json",
        str(tmp_path / "r.json"),
    )
    assert code == 0, output
    (rec,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert rec["verdict"] == "diff" and "this deviant reports ECONNRESET" in rec["reason"]
    assert "refused v4 diff this deviant" in output


def test_unexpected_pass_fails_the_run_unless_updated(tmp_path):
    exp = tmp_path / "exp.toml"
    exp.write_text(DECLARED.replace('"dev"', '"python"'))
    args = ["tests/cases/test_refused.py", "--families", "v4", "--targets", "python", "--expectations", str(exp)]
    code, outcomes, output = run_suite(tmp_path, *args)
    assert code == 1 and outcomes == {"test_refused[v4-python]": "failed"}, output
    assert "XPASS" in output and "run with --update-expectations to remove it" in output
    assert "[[difference]]" in exp.read_text()
    code, outcomes, output = run_suite(tmp_path, *args, "--update-expectations")
    assert code == 0, output
    assert "removed from" in output
    assert "[[difference]]" not in exp.read_text() and exp.read_text().startswith("# test file")


@pytest.mark.parametrize(
    "content,message",
    [
        ("[[difference]]\ntarget = 'go'\nreason = 'x'\n", "`case` must be a non-empty string"),
        ("[[difference]]\ntarget = 'go'\ncase = 'test_x'\nreason = 'x'\nkernel = 'new'\n", "is not a version range"),
        ("[[difference]]\ntarget = 'go'\ncase = 'test_x'\nreason = 'x'\nfamilies = ['v5']\n", "`families` must be"),
        ("[[difference]]\ntarget = 'go'\ncase = 'test_x'\nreason = 'x'\ncolour = 'red'\n", "unknown key(s) ['colour']"),
        ("[[difference]\n", "not valid TOML"),
    ],
)
def test_broken_expectations_file_is_a_usage_error(tmp_path, content, message):
    exp = tmp_path / "exp.toml"
    exp.write_text(content)
    with pytest.raises(expectations.ExpectationsError, match=re.escape(message)):
        expectations.load(exp)
    code, _, output = run_suite(tmp_path, "tests/cases/test_refused.py", "--expectations", str(exp))
    assert code == 4 and message in output


def test_kernel_range_matching():
    d = expectations.Difference(0, "go", "test_x", "r", (), ">=6.5,<7")
    assert d.matches("go", ("test_x[v4-go]", "test_x"), "v4", expectations.kernel_version("6.18.44-fc"))
    assert not d.matches("go", ("test_x[v4-go]", "test_x"), "v4", "5.15.0")
    assert expectations.kernel_version("6.18.44-fc-v669") == "6.18.44"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sysctl", "net.ipv4.no_such_knob=1"], "unknown sysctl net.ipv4.no_such_knob"),
        (["--sysctl", "kernel.panic=1"], "only network sysctls"),
        (["--sysctl", "novalue"], "expected KEY=VALUE"),
        (["--profile", "fastest"], "unknown profile 'fastest'"),
        (["--families", "v5"], "--families: expected v4, v6"),
    ],
)
def test_bad_stack_options_are_usage_errors(tmp_path, args, message):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", *args)
    assert code == 4 and message in output and not outcomes


def test_sysctl_and_profile_are_applied_and_recorded(tmp_path):
    code, _, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--targets",
        "python",
        "--families",
        "v4",
        "--profile",
        "abort-on-overflow",
        "--sysctl",
        "net.core.somaxconn=77",
        "--results-json",
        str(tmp_path / "r.json"),
    )
    assert code == 0, output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["profile"] == "abort-on-overflow"
    assert doc["sysctls"] == {"net.ipv4.tcp_abort_on_overflow": "1", "net.core.somaxconn": "77"}
    (rec,) = doc["results"]
    assert rec["evidence"]["sysctls"]["net.core.somaxconn"] == "77"
    assert rec["evidence"]["sysctls"]["net.ipv4.tcp_abort_on_overflow"] == "1"
    assert "profile abort-on-overflow, sysctls net.ipv4.tcp_abort_on_overflow=1 net.core.somaxconn=77" in output


def test_profiles_differ_only_where_the_behaviour_depends_on_them(tmp_path):
    """A linux-default run and an abort-on-overflow run differ in the case that follows the setting, nowhere else."""
    docs = {}
    for profile in ("linux-default", "abort-on-overflow"):
        out = tmp_path / profile
        out.mkdir()
        code, _, output = run_suite(
            out,
            "tests/cases/test_abort_on_overflow.py",
            "tests/cases/test_queue_full.py",
            "tests/cases/test_refused.py",
            "tests/cases/test_backlog_cap.py",
            "--targets",
            "python,c,go",  # the kernel's behaviour is under test, not the runtimes'
            "--families",
            "v4",
            "-n",
            "4",
            "--profile",
            profile,
            "--results-json",
            str(out / "r.json"),
        )
        assert code == 0, output
        docs[profile] = json.loads((out / "r.json").read_text())
    rows = compare.diff(docs["linux-default"], docs["abort-on-overflow"])
    assert {(case, target) for case, target, _, _ in rows} == {
        ("overflow_final_ack v4", t) for t in ("python", "c", "go")
    }
    assert all(a[1].startswith("dropped") and b[1] == "RST ECONNRESET" for _, _, a, b in rows)


def test_a_failure_reads_as_a_sentence_with_readable_evidence(tmp_path):
    """The matrix cell and the JSON give the case's sentence, not the exception class; the wire is
    relative (times from the first frame, seq/ack from each ISN); socket tables print once, in ss form."""
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "dev",
        "--add-target",
        deviant("wrong-errno", "dev"),
        "--tb=short",
        "--results-json",
        str(tmp_path / "r.json"),
    )
    assert code == 1, output
    (rec,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert rec["verdict"] == "FAIL" and rec["reason"].startswith("expected err ECONNREFUSED, got dev:"), rec["reason"]
    assert "refused v4 FAIL expected err ECONNR" in output, "the matrix cell gives the sentence"
    assert re.search(r"^ 0\.000000 198\.51\.100\.1\.\d+ > 198\.51\.100\.2\.9 \[S\] seq 0 len 0$", output, re.M), output
    assert re.search(r"198\.51\.100\.2\.9 > 198\.51\.100\.1\.\d+ \[RA\] seq 0 ack 1 len 0$", output, re.M), output
    assert output.count("target socket table (ss -tuan)") == 1 and "SockInfo(" not in output
    assert "icmp6 type 143" not in output, "link noise (multicast listener reports) is not the case's evidence"


@pytest.mark.parametrize(
    "content,message",
    [
        ("[1, 2]", "a results file is a JSON object, this is a list"),
        ("null", "a results file is a JSON object, this is a NoneType"),
        ('{"schema": "tcp-conformance-results", "version": 1}', "field `results` must be a list"),
        (
            '{"schema": "tcp-conformance-results", "version": 1, "results": [null], "targets": {}, "sysctls": {}}',
            "results[0] must be an object",
        ),
        (
            '{"schema": "tcp-conformance-results", "version": 1, "results": [{"case": "x"}], '
            '"targets": {}, "sysctls": {}}',
            "results[0].target must be a string",
        ),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ("{not json", "not JSON"),
    ],
)
def test_compare_on_a_malformed_file_exits_2_naming_file_and_field(tmp_path, content, message):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(_doc([("refused v4", "python", "pass", "ECONNREFUSED")])))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    cli = subprocess.run(
        [sys.executable, "-m", "conformance", "compare", str(good), str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2 and str(bad) in cli.stderr and message in cli.stderr, cli.stderr
    assert "Traceback" not in cli.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["--sysctl", "net.ipv4.tcp_syncookies=banana"], "net.ipv4.tcp_syncookies takes 1 integer(s)"),
        (["--agent-deadline", "nan"], "--agent-deadline must be a finite number of seconds > 0, got 'nan'"),
        (["--agent-deadline", "inf"], "--agent-deadline must be a finite number of seconds > 0, got 'inf'"),
        (["--expectations", "/nonexistent/exp.toml"], "--expectations /nonexistent/exp.toml: no such file"),
    ],
)
def test_bad_values_are_usage_errors_before_any_namespace(tmp_path, args, message):
    code, outcomes, output = run_suite(tmp_path, "tests/cases/test_refused.py", *args)
    assert code == 4 and message in output and not outcomes, output


def test_expectation_files_add_to_each_other(tmp_path):
    """A user declares their own target's differences in a file of theirs, beside the repository's."""
    ours, theirs = tmp_path / "ours.toml", tmp_path / "theirs.toml"
    ours.write_text(DECLARED.replace('"dev"', '"dev1"'))
    theirs.write_text(DECLARED.replace('"dev"', '"dev2"'))
    code, outcomes, output = run_suite(
        tmp_path,
        "tests/cases/test_refused.py",
        "--families",
        "v4",
        "--targets",
        "dev1,dev2",
        "--add-target",
        deviant("wrong-errno", "dev1"),
        "--add-target",
        deviant("wrong-errno", "dev2"),
        "--expectations",
        str(ours),
        "--expectations",
        str(theirs),
        "--results-json",
        str(tmp_path / "r.json"),
    )
    assert code == 0, output
    verdicts = {r["target"]: r["verdict"] for r in json.loads((tmp_path / "r.json").read_text())["results"]}
    assert verdicts == {"dev1": "diff", "dev2": "diff"}


def test_html_matrix_keeps_its_header_and_first_column_in_view(tmp_path):
    """Seven targets overflow a 1280 px window: scrolled sideways and down, the header row and the
    behaviour column stay in view (measured in headless chromium), and a FAIL cell shows the sentence."""
    from conformance import html as html_mod

    if not browser():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: ci/setup.sh should have installed it")
        pytest.skip("Debian's chromium is not installed (bash ci/setup.sh installs it)")
    targets = ["python", "c", "go", "java", "node", "rust", "netstack"]
    recs = [
        {
            "id": f"t{i}{t}",
            "case": f"behaviour_number_{i} v4",
            "target": t,
            "verdict": "FAIL" if i == 3 else "pass",
            "reason": "the target's close sent an RST, not a FIN" if i == 3 else "",
            "key": "some long key value " * 3,
            "detail": "",
            "observed": {},
            "runtime": "",
            "pcap": None,
            "duration_s": 0,
            "evidence": {"sockets": ["target:\n    State Recv-Q Send-Q"]},
        }
        for i in range(60)
        for t in targets
    ]
    doc = {
        "schema": "x",
        "version": 1,
        "kernel": "k",
        "profile": "p",
        "sysctls": {},
        "created": "",
        "targets": {t: {"runtime": ""} for t in targets},
        "results": recs,
    }
    page = tmp_path / "m.html"
    probe = (
        "<script>window.addEventListener('load',function(){var s=document.querySelector('.scroll');"
        "s.scrollLeft=3000;s.scrollTop=3000;var h=document.querySelector('.matrix thead th:nth-child(4)')"
        ".getBoundingClientRect(),c=document.querySelector('.matrix tbody tr:nth-child(50) th')"
        ".getBoundingClientRect(),b=s.getBoundingClientRect();document.body.setAttribute('data-probe',"
        "[s.scrollWidth>s.clientWidth,Math.round(h.top-b.top),Math.round(c.left-b.left)].join(','));});</script>"
    )
    page.write_text(html_mod.render(doc, str(page)).replace("</body>", probe + "</body>"))
    dom = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,800",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=2000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    probe_values = re.search(r'data-probe="([^"]*)"', dom)
    assert probe_values, dom[:2000]
    overflows, header_top, column_left = probe_values.group(1).split(",")
    assert overflows == "true", "the matrix must overflow a 1280 px window for this test to mean anything"
    assert abs(int(header_top)) <= 1 and abs(int(column_left)) <= 1, (
        f"scrolled, the header is at {header_top} px and the first column at {column_left} px from the view's edge"
    )
    assert "FAIL the target's close sent an RST, not a FIN" in dom and "State Recv-Q" not in dom.split("<h2>")[0]
