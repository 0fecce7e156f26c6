"""`python -m chaos sim ...`: see `chaos.cli`."""

from chaos.cli import main

raise SystemExit(main())
