"""`python -m dae` is the `dae` command."""

import sys

from .cli import main

sys.exit(main())
