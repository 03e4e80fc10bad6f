"""The `olft` command's entry (the console script and `python -m olft ...`).

`main` takes SIGTERM before it imports anything else: the command's own modules (olft.cli, its
config, jsonargparse, then torch) take from a fraction of a second to seconds, and a kill in
that time would end the process silently (exit 143, no line). Here it stops the command as
later on: "olft: interrupted.", exit 143. `olft/__init__.py` imports nothing and `olft.errors`
only `signal` and `sys`, so only Python's own start comes before this handler.
"""

import sys

from olft.errors import interrupted, stop_on_sigterm


def main(argv: list[str] | None = None) -> int:
    """`olft.cli.main`, with SIGTERM turned into Ctrl-C's stop while olft.cli imports."""
    with stop_on_sigterm():
        try:
            from olft.cli import main as cli_main

            return cli_main(argv)  # installs its own handler and restores this one
        except KeyboardInterrupt as exc:  # a kill while olft.cli imports, or Ctrl-C
            return interrupted(exc)


if __name__ == "__main__":
    sys.exit(main())
