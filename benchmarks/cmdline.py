"""The command line a benchmark records in its results: what the numbers depend on, no more."""

from __future__ import annotations

# Where runs and reports are written, how one command is split over processes, and report-only
# rebuilds change no number: a recorded command without them reruns anywhere.
NOT_RECORDED = ("--shard", "--work-dir", "--results-dir")
SWITCHES = ("--report-only",)


def recorded_args(argv: list[str]) -> list[str]:
    """`argv` less the NOT_RECORDED flags (in both `--flag value` and `--flag=value` forms) and SWITCHES."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in NOT_RECORDED:
            skip = True
        elif a not in SWITCHES and not a.startswith(tuple(f"{f}=" for f in NOT_RECORDED)):
            out.append(a)
    return out
