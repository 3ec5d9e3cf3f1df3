"""`python -m edge.cli`: the same as the `fall-edge` command."""

from edge.cli import main

raise SystemExit(main())
