"""`python -m modelplane` is the `modelplane` command."""

import sys

from modelplane.cli import main

sys.exit(main())
