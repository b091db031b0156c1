"""`python -m modelplane_runtime --model-repository ...`: the same as `modelplane serve ...`."""

import sys

from modelplane_runtime.cli import main

sys.exit(main())
