"""A deviant target, for the suite's own tests only: the Python agent with one behaviour broken.

Each --mode breaks exactly one behaviour that one case checks, so the tests in
tests/suite/test_deviants*.py can show that the case fails on it (a case that
cannot fail is worthless). Modes live in tests/deviants/modes_*.py, each a
MODES dict {name: (operation, replacement)}; a replacement has the signature
of the real agent's op_<operation>. This file is never a built-in target.
"""
import argparse
import glob
import importlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import base  # noqa: E402


def all_modes():
    modes = {}
    for path in sorted(glob.glob(os.path.join(HERE, "modes_*.py"))):
        module = importlib.import_module(os.path.basename(path)[:-3])
        for name, value in module.MODES.items():
            if name in modes:
                raise SystemExit(f"deviant mode {name} defined twice")
            modes[name] = value
    return modes


def main():
    modes = all_modes()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", required=True, action="append", choices=sorted(modes),
                        help="the behaviour to break (repeatable)")
    for mode in parser.parse_args().mode:
        op, fn = modes[mode]
        setattr(base.Agent, "op_" + op, fn)
    base.main()


if __name__ == "__main__":
    main()
