from ssd_eval.cli import main

raise SystemExit(main())
