"""The ``gclib`` command. Subcommands are filled in by the training engine; ``reproduce`` runs the notebooks."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gclib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("reproduce", help="run every notebook with its cpu parameter sets into results/")
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        from .reproduce import reproduce
        return reproduce()
    return 2


if __name__ == "__main__":
    sys.exit(main())
