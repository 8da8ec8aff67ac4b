"""The kernel's SYN retransmission schedule for a connect() whose SYNs get no answer.

One function, syn_schedule(), says when Linux sends each SYN and when connect()
gives up with ETIMEDOUT, for a socket with TCP_SYNCNT=syncnt in a namespace with
net.ipv4.tcp_syn_linear_timeouts=linear (0 where the sysctl is missing: before 6.5).
Cases compare the wire against it (tests/cases/test_timedout.py).
"""

from __future__ import annotations

from dataclasses import dataclass

TCP_TIMEOUT_INIT = 1.0  # s: the SYN's first retransmission timer (RFC 6298's initial RTO)
TCP_RTO_MAX = 120.0  # s: the kernel's cap on one retransmission interval
SYNCNT_MAX = 127  # the largest TCP_SYNCNT the kernel accepts


@dataclass(frozen=True)
class SynSchedule:
    """When the SYNs go out and when connect() gives up, in seconds after the first SYN."""

    syncnt: int
    linear: int  # net.ipv4.tcp_syn_linear_timeouts in force
    syn_times: tuple[float, ...]  # the first SYN at 0.0, then each retransmission
    give_up: float  # the timer firing at which connect() fails with ETIMEDOUT

    @property
    def syns(self) -> int:
        return len(self.syn_times)


def _time_limit(syncnt: int) -> float:
    """The kernel's tcp_model_timeout(): how long after the first SYN the retransmissions may go on."""
    threshold = 6  # ilog2(TCP_RTO_MAX / TCP_TIMEOUT_INIT): the last doubling before the cap
    if syncnt <= threshold:
        return (2 ** (syncnt + 1) - 1) * TCP_TIMEOUT_INIT
    return (2 ** (threshold + 1) - 1) * TCP_TIMEOUT_INIT + (syncnt - threshold) * TCP_RTO_MAX


def syn_schedule(syncnt: int, linear: int = 0) -> SynSchedule:
    """The SYN times and the give-up time of a connect() to an address that never answers.

    The model (net/ipv4/tcp_timer.c: tcp_retransmit_timer, tcp_write_timeout,
    tcp_model_timeout): the first retransmission timer fires TCP_TIMEOUT_INIT (1 s)
    after the SYN; the first linear + 1 intervals are 1 s, later ones double (2, 4,
    8 s ... capped at 120 s). connect() gives up at the first timer firing at or
    after T = (2^(syncnt+1) - 1) s after the first SYN (or once syncnt + linear
    retransmissions were sent, which never comes earlier); each timer firing before
    that sends one more SYN.

    Measured on Linux 6.18 (two namespaces, a silently dropping neighbour, TCP_SYNCNT
    on the socket; SYN times from the capture, give-up from connect()'s own time):

        syncnt linear  SYNs at (s)                                  ETIMEDOUT after
        1      4       0, 1.03, 2.05                                3.08 s
        2      4       0, 1.03, 2.06, 3.08, 4.10, 5.13              7.14 s
        3      4       0, 1.01, 2.03, 3.06, 4.08, 5.11, 7.12, 11.25 19.44 s
        1      2       0, 1.03, 2.06                                3.08 s
        2      2       0, 1.03, 2.05, 3.08, 5.09                    9.19 s
        1      1       0, 1.02, 2.04                                4.06 s
        2      1       0, 1.03, 2.05, 4.07                          8.24 s
        1      0       0, 1.03                                      3.05 s
        2      0       0, 1.04, 3.05                                7.24 s
        3      0       0, 1.02, 3.03, 7.13                          15.32 s
        6      4       11 SYNs (the default tcp_syn_retries=6)      135.1 s

    Each timer fires a little late (the timer wheel rounds it up: about 25 ms per
    second of schedule at HZ=250), so the lateness grows with the time. Kernels
    before 6.5 have no tcp_syn_linear_timeouts and behave as linear=0 (6.1: two SYNs
    and ETIMEDOUT after about 3 s for syncnt=1).
    """
    if not 1 <= syncnt <= SYNCNT_MAX:
        raise ValueError(f"TCP_SYNCNT must be 1..{SYNCNT_MAX}, got {syncnt}")
    if linear < 0:
        raise ValueError(f"tcp_syn_linear_timeouts must be >= 0, got {linear}")
    limit = _time_limit(syncnt)
    times = [0.0]
    now, interval, retransmissions = 0.0, TCP_TIMEOUT_INIT, 0
    while True:
        now += interval  # the retransmission timer fires
        if now >= limit or retransmissions >= syncnt + linear:
            return SynSchedule(syncnt, linear, tuple(times), now)
        times.append(now)  # one more SYN
        retransmissions += 1
        if retransmissions > linear:  # past the linear ones: exponential backoff
            interval = min(interval * 2, TCP_RTO_MAX)
