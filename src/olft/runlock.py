"""One writer per run folder: a lock held while a run writes, and a record naming who holds it.

The lock is an operating-system file lock (`filelock`: flock on Unix), so the kernel drops it
the moment its process dies, SIGKILL included: nothing has to guess from a process id whether a
holder still lives. Next to it `olft.lock.json` records the last holder (process id, host, start
time, command): while the lock is held it names the run in the way, and once the lock is free
and results.json still says "running" it names the run that died. Readers only probe the lock
(take it and let go at once), so reading a folder never blocks a run for longer than a probe.

`olft.lock` stays in the folder after release, on purpose: flock locks the file's inode, so a
holder that deleted it would let a run that had opened it (and waits) lock the deleted inode while
a newcomer creates and locks a new `olft.lock`: two writers in one folder. Deleting it safely needs
every taker to check, once it holds the lock, that its file is still there (a link count above 0);
filelock 3.12, which olft accepts, does not (its release says "Do not remove the lockfile"), and
a reader's probe (`probe`) would recreate the file in that window anyway. (Some later filelock
releases delete it themselves, while holding it, with takers that check: safe, and theirs to do.)

Nothing here imports torch: a process that only reads or holds a lock starts in a blink.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys
from pathlib import Path

from filelock import FileLock, Timeout

from olft.errors import OlftError

LOCK_FILE = "olft.lock"
HOLDER_FILE = "olft.lock.json"
# How long a starting run waits for the lock: long enough to ride out a reader's probe, far
# shorter than any run that really holds it.
WAIT_SECONDS = 2.0


def this_process(started: str) -> dict:
    """The record a holder leaves: process id, host, when its run started (UTC), its command as
    one can paste it, and the directory it ran in (its relative paths are relative to that)."""
    argv = list(sys.argv)
    if argv and (Path(argv[0]).name == "olft" or Path(argv[0]).parts[-2:] == ("olft", "__main__.py")):
        argv[0] = "olft"  # `python -m olft` puts the path of olft/__main__.py here, which does not run as typed
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "command": shlex.join(argv),
            "cwd": os.getcwd()}


def describe(record: dict | None) -> str:
    """'process 123 on host h (started 2026-01-01T10:00:00+00:00: olft run ...)', or a stand-in."""
    if not record:
        return "another process (it left no record of itself)"
    where = f" in {record['cwd']}" if record.get("cwd") else ""
    return f"process {record.get('pid')} on host {record.get('host')} (started {record.get('started')}{where}: {record.get('command')})"


def read_holder(folder: Path) -> dict | None:
    try:
        record = json.loads((Path(folder) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def in_use(folder: Path, holder: dict | None) -> OlftError:
    """The error for a run that finds `folder` held by another live run."""
    return OlftError(f"Run folder {folder} is in use by {describe(holder)}. Two runs cannot write one folder: wait "
                     "for that run to end (or stop it), or pass another --out.")


class RunLock:
    """The writer's hold on one run folder (the folder must exist)."""

    def __init__(self, folder: Path, started: str):
        self.folder = Path(folder)
        self.record = this_process(started)
        self._lock = FileLock(str(self.folder / LOCK_FILE), timeout=WAIT_SECONDS)

    def acquire(self) -> dict | None:
        """Take the lock and record this process; return the previous holder's record (or None).

        Raises OlftError naming the holder when a live run holds the folder.
        """
        try:
            self._lock.acquire()
        except Timeout:
            raise in_use(self.folder, read_holder(self.folder)) from None
        previous = read_holder(self.folder)
        from olft.report import write_json  # report imports torch: only a writer needs it

        write_json(self.folder / HOLDER_FILE, self.record)
        return previous

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def probe(folder: Path) -> tuple[bool, dict | None]:
    """(whether a live run holds `folder`, the last holder's record), without waiting.

    Where the lock file cannot be opened (a read-only copy of a folder), the record's process id
    is checked instead: alive on this host, or on another host (which cannot be checked from here).
    """
    folder = Path(folder)
    record = read_holder(folder)
    if not (folder / LOCK_FILE).exists():
        return False, record  # no run of this olft ever held it
    lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return True, record
    except OSError:
        return _pid_alive(record), record
    lock.release()
    return False, record


def _pid_alive(record: dict | None) -> bool:
    if not record:
        return False
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here: assume the other host's run is alive
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True
