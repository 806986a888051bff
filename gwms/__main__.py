"""`python -m gwms` is the `gwms` command."""

import sys

from gwms.cli import main

sys.exit(main())
