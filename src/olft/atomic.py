"""One way to write a file (or folder) so that a reader never sees it half-written.

Everything is written under a temporary name next to the target and renamed into place
(`os.replace` is atomic on one file system), so a run killed mid-write leaves either the old
file or the new one, never a truncated file that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write to; on success it is renamed onto `path`.

    The temporary name keeps the suffix (writers such as matplotlib pick the format from it)
    and carries the process id (concurrent writers do not clash). On an exception the
    temporary file or folder is removed and `path` is left as it was. A folder cannot replace
    a non-empty folder: then `path` is kept (another process made it first) and ours removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        try:
            os.replace(tmp, path)
        except OSError:
            if not (tmp.is_dir() and path.is_dir()):
                raise
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically, flushed to disk first."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """`obj` as indented JSON (key order kept) plus a final newline, written atomically."""
    atomic_write(path, json.dumps(obj, indent=indent) + "\n")
