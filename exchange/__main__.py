"""`python -m exchange` is the `hetex` command."""

import sys

from exchange.cli.main import main

sys.exit(main())
