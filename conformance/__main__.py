"""Command line: python -m conformance compare A.json B.json [--exit-zero] [--declared FILE]
| check-target -- COMMAND... | kernel VERSION -- PYTEST ARGS... | kernel --list"""

import argparse
import sys

from . import compare


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["kernel"]:  # its own options, then pytest's after --: parsed by conformance/kernels.py
        from . import kernels

        return kernels.main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m conformance", description="TCP conformance suite tools")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser(
        "compare",
        help="compare two --results-json files",
        description="List every case and target whose verdict or key observed value differs "
        "between two runs. Exit 1 when they differ.",
    )
    cmp.add_argument("a", help="results JSON of run A")
    cmp.add_argument("b", help="results JSON of run B")
    cmp.add_argument("--exit-zero", action="store_true", help="only report: exit 0 even when the runs differ")
    cmp.add_argument(
        "--declared",
        metavar="FILE",
        help="a file of declared kernel differences (kernel-differences.toml): exit 1 only on a difference "
        "it does not declare, or on one it declares that is gone",
    )
    chk = sub.add_parser(
        "check-target",
        help="run the protocol self-tests on an agent that is not built in",
        description="Run every protocol self-test (the ready line, every command, every error "
        "code) on the agent started by COMMAND, and print what is wrong, line by line. "
        "Exit 0 when it speaks targets/PROTOCOL.md.",
    )
    chk.add_argument("agent", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the agent's command line")
    sub.add_parser(
        "kernel",
        add_help=False,
        help="run pytest under another Linux kernel (6.1, 6.12...) in a "
        "guest and bring its results home: kernel VERSION -- PYTEST ARGS; kernel --list",
    )
    bench = sub.add_parser(
        "bench",
        help="time a selection: wall, CPU, slowest case, ratios (a benchmark, no verdict)",
        description="Run pytest on a selection once and print wall time, CPU time, the sum of "
        "the cases' durations, the slowest case, the protocol's own waits, pytest's "
        "start, and the ratios wall / slowest case and CPU per case.",
    )
    bench.add_argument(
        "pytest_args",
        nargs=argparse.REMAINDER,
        metavar="-- PYTEST ARGS",
        help="the selection, as for pytest (e.g. -- tests/cases -k refused -n 8)",
    )
    args = parser.parse_args(argv)
    if args.command == "bench":
        from . import bench as bench_mod

        return bench_mod.main(args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args)
    if args.command == "check-target":
        from . import check_target

        return check_target.main(args.agent[1:] if args.agent[:1] == ["--"] else args.agent)
    try:
        return compare.main(args.a, args.b, args.exit_zero, declared=args.declared)
    except (OSError, ValueError) as e:
        print(f"python -m conformance compare: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
