"""`python -m chaos sim ...` and `python -m chaos run ...`: see `chaos.cli`."""

from chaos.cli import main

raise SystemExit(main())
