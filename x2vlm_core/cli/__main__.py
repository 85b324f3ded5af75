"""`python -m x2vlm_core.cli` = the `x2vlm` command."""

import sys

from x2vlm_core.cli import main

sys.exit(main())
