"""Command line: ``ssd-eval <command> ...`` (also ``python -m ssd_eval``): logging, exit codes, one-line errors.

The parser is in ``cli/parser.py``, the subcommands in ``cli/commands.py``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ssd_eval.cli.commands import cmd_bench_harness
from ssd_eval.cli.parser import build_parser
from ssd_eval.engine.progress import progress_log
from ssd_eval.errors import UserError


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a line is logged (not when it was made)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(verbosity: int) -> None:
    """Diagnostics to stderr: warnings by default, -v info, -vv debug; a run's progress lines always, plain."""
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbosity, 2)]
    logging.basicConfig(level=level, format="ssd-eval: %(levelname)s: %(message)s", stream=sys.stderr, force=True)
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress_log.handlers = [handler]  # replacing the one an earlier call set
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for user errors, no traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench-harness"]:  # argparse's REMAINDER would refuse the options that come first
        configure_logging(0)
        return cmd_bench_harness(argparse.Namespace(arguments=argv[1:]))
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"ssd-eval: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file system refusal the specific checks did not foresee: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"ssd-eval: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; finished images stay in the resume cache: run the same command to go on" \
            if args.command == "eval" else ""
        print(f"ssd-eval: interrupted{hint}", file=sys.stderr)
        return 130
