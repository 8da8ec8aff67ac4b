"""Shared by the deviant modes: the real Python agent module and its original operations."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "targets", "python"))
import agent as base  # noqa: E402  the real Python agent

_ORIGINAL = {name[3:]: getattr(base.Agent, name) for name in dir(base.Agent) if name.startswith("op_")}


def original(op):
    """The real agent's implementation of `op` (call it as original("connect")(self, ...))."""
    return _ORIGINAL[op]
