"""The command line a benchmark records in its results: what the numbers depend on, no more."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

# Where runs and reports are written, where this machine keeps GLUE (the same files anywhere; a
# machine's path in a committed report names nothing a reader has), how one command is split over
# processes, and report-only rebuilds change no number: a recorded command without them reruns anywhere.
NOT_RECORDED = ("--shard", "--work-dir", "--results-dir", "--glue-dir")
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


def recorded_command(command: str) -> str:
    """A command line as `recorded_args` records it ('python benchmarks/x.py' and its recorded flags):
    reports built from a work dir whose bench.json an older version wrote name no machine's paths."""
    words = shlex.split(command)
    return shlex.join(words[:2] + recorded_args(words[2:]))


def print_summary(summary_md: Callable[[dict], str], description: str, report: str) -> None:
    """The `__main__` of a report script: read the report JSON named on the command line (`report`:
    its path pattern, for --help and the error) and print `summary_md` of it. A missing file is an
    argparse error naming where the committed reports are."""
    import argparse

    cli = argparse.ArgumentParser(description=description)
    cli.add_argument("report", type=Path, help=report)
    path = cli.parse_args().report
    if not path.is_file():
        cli.error(f"{path} not found (the committed reports are {report})")
    print(summary_md(json.loads(path.read_text())))
