"""``python -m trader``."""

from trader.cli import main

raise SystemExit(main())
