"""The `olft` command's entry (the console script and `python -m olft ...`).

`main` takes SIGTERM before it imports anything: the command's own modules (olft.cli, its
config, jsonargparse, then torch) take from a fraction of a second to seconds, and a kill in
that time would end the process silently (exit 143, no line). Here it stops the command as
later on: "olft: interrupted.", exit 143. `olft/__init__.py` imports nothing, so only Python's
own start comes before this handler.
"""

import signal
import sys


class _Terminated(KeyboardInterrupt):
    """SIGTERM before olft.cli has its own handler (olft.errors.Terminated may be half-imported then)."""


def main(argv: list[str] | None = None) -> int:
    """`olft.cli.main`, with SIGTERM turned into Ctrl-C's stop while olft.cli imports."""

    def stop(signum, frame):
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        from olft.cli import main as cli_main

        return cli_main(argv)  # installs its own handler and restores this one
    except KeyboardInterrupt as exc:  # a kill while olft.cli imports, or Ctrl-C
        print("olft: interrupted.", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130  # 128 + SIGTERM's 15, 128 + SIGINT's 2
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
