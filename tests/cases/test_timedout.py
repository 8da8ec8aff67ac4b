"""connect() to an address that silently drops SYNs fails with ETIMEDOUT after SYN retransmissions.

Seed 002 (docs/seeds.md): "三次握手无法建立,客户端发出的SYN包没有任何响应,返回TIMEOUT错误".
The kernel's default gives up after about 133 s; the case sets TCP_SYNCNT=1 on
the target's socket (one retransmission allowed), which ends it after about
3 s. How many SYNs that is, and when connect() gives up, depends on the
namespace's net.ipv4.tcp_syn_linear_timeouts (kernel 6.5+; 4 by default: three
SYNs; without it, two): conformance.synretry.syn_schedule() has the measured
schedule. The wire must show exactly that schedule, so the option is seen to
take effect (a target that ignores it, or sets another count, sends a SYN too
many), and the error must be the kernel's ETIMEDOUT at the schedule's give-up
time, not a timeout of the agent's own.
"""

import time

from conformance.capture import tcp
from conformance.synretry import syn_schedule
from conformance.timing import slack

DEAD_PORT = 80
SYNCNT = 1
# How far a SYN or the give-up may stray from the kernel's schedule: a fixed part (scaled by the
# run's slack), plus a drift per second of schedule, since each retransmission timer fires late
# by up to one timer-wheel granule (measured about 25 ms per 1 s timer at HZ=250; 64 ms at HZ=1000).
TIMER_TOLERANCE_S = 0.7  # a loaded machine reports the give-up late; a SYN too many is caught by its count
TIMER_DRIFT = 0.07  # s per s of schedule


# How often the watch looks at the socket table between SYNs (a SYN wakes it at once; the give-up
# time is the agent's own measure of connect(), judged after).
LOOK_EVERY = 0.1


def tolerance(at: float) -> float:
    """How far from `at` seconds (after the first SYN) the kernel's timer event may be seen."""
    return slack(TIMER_TOLERANCE_S) + TIMER_DRIFT * at


def linear_timeouts(host) -> int:
    """The namespace's net.ipv4.tcp_syn_linear_timeouts; 0 where the kernel lacks it (before 6.5)."""
    try:
        return int(host.sysctl("net.ipv4.tcp_syn_linear_timeouts"))
    except ValueError:
        return 0


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def watch_syns(net, dead: str, plan, what: str) -> list:
    """While connect() waits: the target's SYNs to dead, until the kernel gives up (its socket
    leaves SYN_SENT). Fails at once at a SYN beyond the schedule, or when the schedule's give-up
    time (plus tolerance) has passed and the socket still waits."""
    syn = tcp(dst=dead, dport=DEAD_PORT, flags="S")
    first = net.wire.expect(syn, "the target's SYN")
    deadline = first.time + plan.give_up + tolerance(plan.give_up)  # wire time (the capture's clock)
    while True:
        syns = net.wire.tcp(dst=dead, dport=DEAD_PORT, flags="S")
        if len(syns) > plan.syns:
            extra = syns[plan.syns]
            raise AssertionError(
                f"{what} did not take effect: a {ordinal(plan.syns + 1)} SYN at "
                f"{extra.time - first.time:.1f} s; {describe(plan)}"
            )
        if not net.target.sockets("SYN_SENT", dst=dead, dport=DEAD_PORT):
            return syns
        if time.time() > deadline:
            raise AssertionError(
                f"{what} did not take effect: connect() still waits in SYN_SENT "
                f"{time.time() - first.time:.1f} s after the first SYN ({len(syns)} SYN(s) "
                f"so far); {describe(plan)}"
            )
        net.wire.wait_for(syn, LOOK_EVERY, count=len(syns) + 1)  # wakes at the next SYN, if one comes


def describe(plan) -> str:
    return (
        f"this kernel (tcp_syn_linear_timeouts={plan.linear}) sends {plan.syns} SYNs and gives up at {plan.give_up:g} s"
    )


def test_timedout(net, agent, family, record):
    dead = net.topo.blackhole(family)
    plan = syn_schedule(SYNCNT, linear_timeouts(net.target))
    what = f"TCP_SYNCNT={SYNCNT}"
    record("tcp_syn_linear_timeouts", plan.linear)
    record(
        "expected",
        f"{plan.syns} SYNs at {', '.join(f'{t:g}' for t in plan.syn_times)} s, ETIMEDOUT at {plan.give_up:g} s",
    )
    s = agent.socket("tcp", family).h
    agent.setsockopt(s, "syncnt", SYNCNT).check("allow one SYN retransmission only")
    got = agent.getsockopt(s, "syncnt")  # extra evidence where the language can read it back
    record("getsockopt_syncnt", got.value if got.ok else got.outcome)
    record("shortened_by", f"{what} on the target's socket")
    pending = agent.connect_later(s, dead, DEAD_PORT, None)

    # Kernel, while it waits: the target's socket is in SYN_SENT towards the dead address.
    waiting = net.target.wait_state("SYN_SENT", dst=dead, dport=DEAD_PORT)
    assert waiting, "the target's socket is not in SYN_SENT while connect() waits"
    watch_syns(net, dead, plan, what)

    r = pending.wait()
    syns = net.wire.tcp(dst=dead, dport=DEAD_PORT, flags="S")
    times = [x.time - syns[0].time for x in syns]
    record("errno", r.errno)
    record("connect_ms", f"{r.ms:.1f}")
    record("syns", len(syns))
    record("syn_times_s", " ".join(f"{t:.3f}" for t in times))
    record("protocol_wait_s", f"{r.ms / 1000:.3f}")  # the kernel's SYN schedule, for `conformance bench`
    record.key(f"{r.errno} {len(syns)}SYN", f"{r.ms / 1000:.1f}s")
    assert r.errno == "ETIMEDOUT", f"expected err ETIMEDOUT (the kernel's), got {r}"

    assert len(syns) == plan.syns, f"{what}: saw {len(syns)} SYN(s) at {listed(times)} s; {describe(plan)}"
    assert len({x.seq for x in syns}) == 1, "the retransmitted SYNs must carry the same sequence number"
    for n, (seen, due) in enumerate(zip(times, plan.syn_times, strict=True), 1):
        assert abs(seen - due) <= tolerance(due), (
            f"{what}: the {ordinal(n)} SYN went out at {seen:.3f} s, the schedule has it at {due:g} s "
            f"(± {tolerance(due):.2f} s); {describe(plan)}"
        )
    gave_up = r.ms / 1000
    assert abs(gave_up - plan.give_up) <= tolerance(plan.give_up), (
        f"{what}: connect() gave up after {gave_up:.3f} s, the schedule says {plan.give_up:g} s "
        f"(± {tolerance(plan.give_up):.2f} s); {describe(plan)}"
    )
    assert not net.wire.tcp(src=dead), "something answered the dead address"


def listed(times) -> str:
    return ", ".join(f"{t:.2f}" for t in times)
