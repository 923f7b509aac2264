"""`python -m lnlib`: the command line (see `lnlib.cli`)."""

from lnlib.cli import main

raise SystemExit(main())
