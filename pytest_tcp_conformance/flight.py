"""Several conformance cases in flight at once in one pytest process, each run by a forked child.

A case spends almost all its time waiting on TCP timers, and what it costs the machine is its CPU
(tens of ms). pytest runs one test at a time per process, and each pytest-xdist worker costs about
1.4 s of CPU to start (Python, pytest, pyroute2, collection), which on two cores bounds how many
waits overlap. So the process forks up to `size` children instead, after collection: a child
already has everything imported and collected, and runs the cases it is handed one after another,
each with pytest's own runtestprotocol (setup, call, teardown: fresh namespaces, agent, capture, all
removed), handing back its reports; the parent reports them through pytest's hooks (terminal,
JUnit, the matrix, --results-json) as if it had run the case itself.

Why processes and not threads: pytest keeps a test's fixtures and its setup/teardown stack in
objects shared by every test of the session (FixtureDef caches, the session's SetupState), so two
tests in one process at once would share their fixtures. A forked child has its own copy of all of
it, and a case that crashes or hangs its process takes no other case with it.

Each case still runs alone in its own namespaces; the verdicts are those of a serial run (checked
by tests/suite/test_parallel.py). No library fits: pytest-xdist starts fresh interpreters, and
pytest-forked runs one forked test at a time.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import select
import signal
import struct
import sys
import time
import traceback

import pytest
from _pytest.runner import SetupState, runtestprotocol

from conformance import case as case_mod

PR_SET_PDEATHSIG = 1
# --in-flight auto: cases at once per CPU, and at most AUTO_MAX (a child holds about 14 MB of its
# own). A case's CPU is a few tens of ms in seconds of waiting. Measured on 2 CPUs, the catalogue
# of python, c and go: 16 at once 13.7 to 14.4 s, 24 at once 11.7 s, 32 at once 11.5 to 12.2 s
# (more CPU: the cases get longer as they wait for a CPU).
AUTO_PER_CPU = 12
AUTO_MAX = 64
# How long an interrupted run waits for its cases to remove what they made (each case's own waits
# are bounded far below this), before it kills them and sweeps.
DRAIN_AFTER_INTERRUPT_S = 60.0


class _Child:
    """A forked child that runs cases one after another: item indexes in, pickled reports out."""

    def __init__(self, pid: int, pidfd: int, commands, results):
        self.pid, self.pidfd, self.commands, self.results = pid, pidfd, commands, results
        self.item = None  # the case it is running, or None when idle

    def close(self) -> None:
        for f in (self.commands, self.results):
            try:
                f.close()
            except OSError:
                pass
        os.close(self.pidfd)


class Flight:
    """Up to `size` forked children, each running one case at a time; reports handed to pytest's
    hooks in this process. A child runs many cases (what it copies of the parent's memory on its first
    case, it keeps: a child per case cost twice the system CPU, measured)."""

    def __init__(self, config, size: int, properties):
        """properties(item): the user properties a case's reports carry (target, family, behaviour):
        a report made here for a child that died has them too."""
        self.config, self.size, self.properties = config, size, properties
        self.children: list[_Child] = []
        self.index: dict[str, int] | None = None  # nodeid -> position in session.items (the child's copy)

    # -- parent ------------------------------------------------------------------------------
    def start(self, item) -> None:
        """Run item in an idle child (made when fewer than `size` exist), once one is free."""
        if self.index is None:
            self.index = {item.nodeid: i for i, item in enumerate(item.session.items)}
        self.collect(block=False)
        child = next((c for c in self.children if c.item is None), None)
        if child is None and len(self.children) < self.size:
            child = self._fork(item.session)
        while child is None:
            self.collect(block=True)
            child = next((c for c in self.children if c.item is None), None)
        child.item = item
        try:
            child.commands.write(_FRAME.pack(self.index[item.nodeid]))
            child.commands.flush()
        except OSError:  # it died while idle: collect() reports the item as its casualty
            pass

    def collect(self, block: bool) -> None:
        """Report every case that has ended (with block, wait for one first)."""
        busy = {c.results.fileno(): c for c in self.children if c.item is not None}
        busy.update({c.pidfd: c for c in self.children})
        if not busy:
            return
        ready, _, _ = select.select(list(busy), [], [], None if block else 0)
        for fd in ready:
            child = busy[fd]
            if child not in self.children:
                continue  # both its fds were ready: handled
            if fd == child.pidfd:
                self._died(child)
                continue
            data = _read_frame(child.results)
            if data is None:
                self._died(child)
                continue
            item, child.item = child.item, None
            reports = [self.config.hook.pytest_report_from_serializable(config=self.config, data=d) for d in data]
            self._log(item, reports)

    def _log(self, item, reports) -> None:
        # A case's whole log at once, when it ends: the terminal's lines and progress then name the
        # case they belong to, whatever else is in flight.
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)

    def _died(self, child: _Child) -> None:
        """A child ended: on its own only with a case unfinished (a crash, a kill). Its case fails."""
        self.children.remove(child)
        _, status = os.waitpid(child.pid, 0)
        child.close()
        if child.item is not None:
            from conformance.topology import sweep

            sweep()  # the namespaces it could not remove
            code = os.waitstatus_to_exitcode(status)
            why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            self._log(child.item, [_died(child.item, child.pid, why, self.properties(child.item))])

    def drain(self) -> None:
        """Wait for every case in flight and report it; then end the children."""
        try:
            while any(c.item is not None for c in self.children):
                self.collect(block=True)
        except BaseException:
            self.stop()
            raise
        for child in list(self.children):
            child.commands.close()  # end of input: it exits
            os.waitpid(child.pid, 0)
            child.close()
        self.children.clear()

    def stop(self) -> None:
        """The run is interrupted (Ctrl-C, SIGTERM): the children are told the same (SIGTERM) and given
        time to remove what they made; what is left of them after that is killed, and swept."""
        for child in self.children:
            _signal(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_AFTER_INTERRUPT_S
        left = {c.pidfd: c for c in self.children}
        while left and time.monotonic() < deadline:
            ready, _, _ = select.select(list(left), [], [], max(0.0, deadline - time.monotonic()))
            for fd in ready:
                os.waitpid(left.pop(fd).pid, 0)
        for child in left.values():
            _signal(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
        for child in self.children:
            child.close()
        self.children.clear()
        from conformance.topology import sweep

        sweep()

    def _fork(self, session) -> _Child:
        commands_r, commands_w = os.pipe()
        results_r, results_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        # The child's garbage collector leaves the parent's objects alone: walking them would copy
        # every page of the parent's heap into the child (copy-on-write).
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            os.close(commands_w)
            os.close(results_r)
            for other in self.children:  # the other children's pipes are not this one's
                other.commands.close()
                other.results.close()
            self._child(session, os.fdopen(commands_r, "rb"), os.fdopen(results_w, "wb"))  # never returns
        os.close(commands_r)
        os.close(results_w)
        child = _Child(pid, os.pidfd_open(pid), os.fdopen(commands_w, "wb"), os.fdopen(results_r, "rb"))
        self.children.append(child)
        return child

    # -- child -------------------------------------------------------------------------------
    def _child(self, session, commands, results) -> None:
        code = 1
        try:
            # SIGTERM (from the parent when it is interrupted, or when it dies: PDEATHSIG) ends the case
            # as Ctrl-C does: its teardown removes what it made.
            signal.signal(signal.SIGTERM, _interrupt)
            signal.signal(signal.SIGINT, _interrupt)
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            # pytest's output capture: the parent's capture files are shared with it; take our own.
            capman = self.config.pluginmanager.getplugin("capturemanager")
            if capman is not None and capman.is_globally_capturing():
                capman.stop_global_capturing()
                capman.start_global_capturing()
            # This child's own setup/teardown stack: its teardowns end only what its cases made.
            session._setupstate = SetupState()
            while True:
                frame = commands.read(_FRAME.size)
                if len(frame) < _FRAME.size:
                    break  # the parent is done with it
                item = session.items[_FRAME.unpack(frame)[0]]
                try:
                    reports = runtestprotocol(item, log=False, nextitem=None)
                finally:
                    session._setupstate.teardown_exact(None)  # after an interruption: what is left
                    for net in list(case_mod.LIVE):  # a topology an interruption cut short in its making
                        net.close()
                data = [self.config.hook.pytest_report_to_serializable(config=self.config, report=r) for r in reports]
                payload = pickle.dumps(data)
                results.write(_FRAME.pack(len(payload)) + payload)
                results.flush()
            code = 0
        except KeyboardInterrupt:
            code = 2  # interrupted: pytest's process says so
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


_FRAME = struct.Struct("=Q")


def _read_frame(f):
    """One length-prefixed pickle from a child, or None at its end."""
    head = f.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    body = f.read(size)
    return pickle.loads(body) if len(body) == size else None


def _interrupt(signum, frame):
    """The first Ctrl-C or SIGTERM ends the case; later ones are ignored, so that its teardown, which
    removes what it made, is not cut short (the parent kills a child that takes too long, and sweeps)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _died(item, pid: int, why: str, properties: list) -> pytest.TestReport:
    """A failed report for a case whose process ended without handing back its own."""
    return pytest.TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={k: 1 for k in item.keywords},
        outcome="failed",
        longrepr=f"the case's process (pid {pid}) ended without its report: {why}",
        when="call",
        sections=[],
        duration=0.0,
        start=0.0,
        stop=0.0,
        user_properties=[*item.user_properties, *properties],
    )
