"""The run's reports: one Reporter gathers every case's result and writes the matrix, JSON and HTML.

Registered on the controller only (under pytest-xdist, workers' reports reach the
controller's hooks); JUnit properties come from each item's user_properties.
"""

from __future__ import annotations

from pathlib import Path

from conformance import expectations as expect_mod
from conformance import html, results
from conformance.matrix import render
from conformance.topology import sweep


class Reporter:
    def __init__(self, config, run):
        self.config, self.run = config, run
        self.reports: list = []
        self.records: list[dict] = []
        self.stale: list = []
        self.output_errors: list[str] = []  # writes that failed (disk full...): said once, at the end

    def pytest_runtest_logreport(self, report):
        self.reports.append(report)
        if getattr(report, "tcc_output_error", None):
            self.output_errors.append(report.tcc_output_error)

    def pytest_sessionfinish(self, session):
        self.run.swept += sweep()  # namespaces of xdist workers that were killed during this run
        opt, run = self.config.getoption, self.run
        self.records = results.collect(self.reports)
        doc = results.document(
            self.records,
            profile=opt("--profile"),
            sysctls=run.sysctls,
            kernel=run.kernel,
            kernel_version=expect_mod.kernel_version(run.kernel),
            targets=list(run.targets),
        )
        for name, write in (("--results-json", results.write_json), ("--html", html.write)):
            if opt(name):
                try:
                    write(opt(name), doc)
                except OSError as e:
                    self.output_errors.append(f"{name} {opt(name)}: {e.strerror or e}")
        self._stale_expectations()

    def _stale_expectations(self):
        """Declared differences whose cases all passed: reported, and removed with --update-expectations."""
        declared: dict[str, set] = {}
        for r in self.records:
            if "declared" in r["observed"]:
                declared.setdefault(r["observed"]["declared"], set()).add(r["verdict"])
        stale = {key for key, verdicts in declared.items() if verdicts == {"XPASS"}}
        self.stale = [d for d in self.run.expectations if d.key in stale]
        if self.stale and self.config.getoption("--update-expectations"):
            for path in dict.fromkeys(d.path for d in self.stale):
                expect_mod.remove(Path(path), {d.index for d in self.stale if d.path == path})

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        write, opt, run = terminalreporter.write_line, config.getoption, self.run
        text = render(self.records, list(run.targets))
        if text:
            terminalreporter.write_sep("=", "TCP conformance matrix")
            write(text)
            overrides = " ".join(f"{k}={v}" for k, v in run.sysctls.items())
            write(f"kernel {run.kernel}, profile {opt('--profile')}" + (f", sysctls {overrides}" if overrides else ""))
        for d in self.stale:
            verb = (
                "removed from"
                if opt("--update-expectations")
                else "is gone; run with --update-expectations to remove it from"
            )
            write(f"declared difference {d.target} {d.case} ({d.reason}) {verb} {d.path}")
        if run.swept:
            write(
                f"swept {len(run.swept)} namespace(s) or container(s) left by killed runs or workers: "
                f"{', '.join(run.swept)}"
            )
        for note in run.notes:
            write(f"sweep: {note}")
        if self.records:
            try:
                kept = run.pcap_dir.exists() and any(run.pcap_dir.iterdir())
            except OSError:
                kept = False
            write(
                f"pcap files: {run.pcap_dir}"
                + ("" if kept else " (none kept: only failed cases keep theirs; --keep-pcaps keeps all)")
            )
        for name in ("--results-json", "--html"):
            if opt(name) and not any(e.startswith(name) for e in self.output_errors):
                write(f"{name[2:]}: {opt(name)}")
        if self.output_errors:
            more = f" (and {len(self.output_errors) - 1} more)" if len(self.output_errors) > 1 else ""
            terminalreporter.write_line(
                f"could not write {self.output_errors[0]}{more}; every verdict above stands", red=True
            )
