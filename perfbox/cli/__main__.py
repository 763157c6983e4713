"""`python -m perfbox.cli`: the `perfbox` command."""

import sys

from perfbox.cli import main

sys.exit(main())
