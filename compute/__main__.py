"""`python -m compute`: the EditScope command line (see compute/cli.py)."""

import sys

from compute.cli import main

sys.exit(main())
