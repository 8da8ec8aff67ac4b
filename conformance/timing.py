"""Time in the cases: one slack factor for every tolerance and bounded wait, and wait_until.

Cases name their timing constants (how long a state may take to appear, how late a
blocked call may wake) in seconds or milliseconds as measured on an idle machine,
and pass them through slack() where they are used. The factor comes from the
run's `--timing-slack FACTOR` (or the environment variable TCC_TIMING_SLACK),
like packetdrill's tolerance and kselftest's slow-machine switch: a loaded or
emulated machine raises it, and every tolerance and wait grows with it. Protocol
timers under test (a SYN retransmission schedule) are the kernel's and are not
scaled; only the harness's patience is.
"""

from __future__ import annotations

import math
import os
import time

ENV = "TCC_TIMING_SLACK"
WAIT = 2.0  # s: the default bound on waiting for something expected soon (a state, a packet)
POLL = 0.01  # s: how often a wait looks again at first
# s: the longest gap between two looks of a long wait: a look is a socket-table dump (about 0.1 ms of
# CPU), and dozens of cases wait at once
MAX_POLL = 0.05
# s: how long a case leaves a queued connection or unread data alone before judging that the target's
# runtime did too. An event-driven runtime (Node's libuv) accepts and reads on its own 6 to 29 ms after
# the kernel queued a connection or data (measured, loaded machine); a program-driven one never does.
RUNTIME_GRACE = 0.2


def parse_slack(text: str) -> float:
    """A slack factor: a finite number >= 1 (ValueError otherwise, naming what is wrong)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"timing slack must be a number >= 1, got {text!r}") from None
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"timing slack must be a finite number >= 1, got {text!r}")
    return value


_factor = parse_slack(os.environ.get(ENV, "1") or "1")


def set_slack(factor: float) -> None:
    global _factor
    _factor = parse_slack(str(factor))


def factor() -> float:
    return _factor


def slack(amount: float) -> float:
    """A tolerance or bound scaled by the run's slack factor (same unit as given)."""
    return amount * _factor


def wait_until(condition, timeout: float = WAIT, interval: float = POLL, max_interval: float = MAX_POLL):
    """Call condition() until it returns something truthy or slack(timeout) seconds pass.

    Returns that truthy value, or the last (falsy) value when time ran out. The
    condition is always called at least once and once more at the deadline.
    """
    deadline = time.monotonic() + slack(timeout)
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = max(interval, min(interval * 1.5, max_interval))  # soon looks often, a long wait less


def holds(condition, duration: float = RUNTIME_GRACE, interval: float = MAX_POLL) -> bool:
    """Whether condition() stays truthy for slack(duration) seconds, looked at every interval.

    False at the first falsy answer (without waiting out the rest). The counterpart of wait_until for
    what must not change: a connection left in the accept queue, data left unread (a change of those
    lasts, so a look every 50 ms misses none)."""
    deadline = time.monotonic() + slack(duration)
    while True:
        if not condition():
            return False
        if time.monotonic() >= deadline:
            return True
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
