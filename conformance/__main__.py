"""Command line: python -m conformance compare A.json B.json [--exit-zero]"""
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
    args = parser.parse_args(argv)
    try:
        return compare.main(args.a, args.b, args.exit_zero)
    except (OSError, ValueError) as e:
        print(f"python -m conformance compare: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
