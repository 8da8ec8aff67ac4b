"""The pytest plugin of the TCP conformance suite (pytest_tcp_conformance.plugin)."""

import os
import sys

from conformance.targets import cache_dir


def _bytecode_in_cache() -> None:
    """Keep bytecode, and pytest's rewritten test modules, in a private folder of the suite's cache.

    Never in the checkout; and where PYTHONDONTWRITEBYTECODE says not to litter (it is often set
    for that reason), not lost either: without a cache every pytest-xdist worker rewrites every test
    module again, about 1 s of CPU a worker (measured). An explicit PYTHONPYCACHEPREFIX is kept."""
    if sys.pycache_prefix:
        return
    try:
        prefix = cache_dir() / "pycache"
        prefix.mkdir(mode=0o700, exist_ok=True)
        if prefix.stat().st_uid != os.geteuid() or prefix.stat().st_mode & 0o022:
            return  # not ours alone: an interpreter must not load bytecode others can write
    except OSError:
        return
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False


# Before the plugin imports the harness: its modules' bytecode goes to the cache too.
_bytecode_in_cache()
