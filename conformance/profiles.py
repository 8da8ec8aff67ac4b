"""Stack configurations: named sysctl profiles and --sysctl KEY=VALUE, applied to the target's namespace.

Every namespace starts from topology.BASE_SYSCTLS (Linux defaults, set
explicitly); a profile and then --sysctl options override them.
"""

from __future__ import annotations

import os

from .topology import sysctl_path

PROFILES: dict[str, dict[str, str]] = {
    "linux-default": {},
    "abort-on-overflow": {"net.ipv4.tcp_abort_on_overflow": "1"},
    "no-syncookies": {"net.ipv4.tcp_syncookies": "0"},
    "syn-linear-off": {"net.ipv4.tcp_syn_linear_timeouts": "0"},
}


def parse_sysctl(spec: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value:
        raise ValueError(f"--sysctl {spec!r}: expected KEY=VALUE, e.g. net.ipv4.tcp_syn_retries=2")
    try:
        path = sysctl_path(key)
    except ValueError:
        raise ValueError(f"--sysctl {spec!r}: only network sysctls (net.*) can be set") from None
    # The host namespace has every per-namespace net sysctl too: checking the
    # file exists (read-only) catches a typo before any namespace is made.
    if not os.path.exists(path):
        raise ValueError(f"--sysctl {spec!r}: unknown sysctl {key} on this kernel")
    check_value(key, value, path, f"--sysctl {spec!r}")
    return key, value


def check_value(key: str, value: str, path: str, where: str) -> None:
    """A value the kernel will take: where the host's value is numbers, as many numbers (the kernel's
    EINVAL would otherwise come from every case, naming nothing)."""
    try:
        with open(path) as f:
            current = f.read().split()
    except OSError:
        return
    given = value.split()
    if current and all(_integer(w) for w in current):
        if len(given) != len(current) or not all(_integer(w) for w in given):
            example = " ".join(current)
            raise ValueError(f"{where}: {key} takes {len(current)} integer(s), like {example!r}; got {value!r}")


def _integer(word: str) -> bool:
    return word.lstrip("-").isdigit()


def stack_config(profile: str, sysctls: list[str]) -> dict[str, str]:
    """The target namespace's overrides for this run: the profile's, then each --sysctl."""
    if profile not in PROFILES:
        raise ValueError(f"--profile: unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    config = dict(PROFILES[profile])
    for key in config:
        if not os.path.exists(sysctl_path(key)):
            raise ValueError(f"--profile {profile}: this kernel has no {key}")
    config.update(parse_sysctl(s) for s in sysctls)
    return config
