"""`python -m olft ...`: the `olft` command (same options, output and exit codes)."""

import sys

from olft.cli import main

if __name__ == "__main__":
    sys.exit(main())
