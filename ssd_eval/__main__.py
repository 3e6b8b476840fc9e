"""``python -m ssd_eval``: the ``ssd-eval`` command line."""

from ssd_eval.cli import main

raise SystemExit(main())
