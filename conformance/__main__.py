"""Command line: python -m conformance compare A.json B.json [--exit-zero] | check-target -- COMMAND..."""
import argparse
import sys

from . import compare


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description="TCP conformance suite tools")
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="compare two --results-json files",
                         description="List every case and target whose verdict or key observed value differs "
                                     "between two runs. Exit 1 when they differ.")
    cmp.add_argument("a", help="results JSON of run A")
    cmp.add_argument("b", help="results JSON of run B")
    cmp.add_argument("--exit-zero", action="store_true", help="only report: exit 0 even when the runs differ")
    chk = sub.add_parser("check-target", help="run the protocol self-tests on an agent that is not built in",
                         description="Run every protocol self-test (the ready line, every command, every error "
                                     "code) on the agent started by COMMAND, and print what is wrong, line by line. "
                                     "Exit 0 when it speaks targets/PROTOCOL.md.")
    chk.add_argument("agent", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the agent's command line")
    args = parser.parse_args(argv)
    if args.command == "check-target":
        from . import check_target

        return check_target.main(args.agent[1:] if args.agent[:1] == ["--"] else args.agent)
    try:
        return compare.main(args.a, args.b, args.exit_zero)
    except (OSError, ValueError) as e:
        print(f"python -m conformance compare: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
