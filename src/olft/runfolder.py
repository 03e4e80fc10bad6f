"""The run folder is the unit of work: finished pieces are kept, a rerun continues.

Layout:
    config.json            resolved config (compared on resume)
    results.json           everything finished so far; `complete` says whether it is all there
    pieces/candidate-<L>.json, pieces/strategy-<name>.json   one file per finished piece
    weights/<name>.safetensors                               tuned module + head per strategy
    checkpoints/<name>.pt                                    mid-training state (optional)
    table.md, layers.png                                     written when the run completes

Every file is written atomically (temporary file, then rename) the moment its piece finishes,
so a run killed at any instant leaves only whole files, and results.json never claims more
than the pieces that exist.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from olft import report
from olft.errors import OlftError

# Fields that do not change what a run computes; they may differ on resume. How the work is spread
# (processes, --selection-parallel, --device-map, checkpointing) is one of them.
IGNORED_ON_RESUME = {"out", "strategies", "selection_parallel", "device_map", "gradient_checkpointing"}


# What olft did before these fields existed, where that differs from today's default.
OLDER = {"selection.selector": "exhaustive", "selection.selection_adaptive": 0}


def _defaults() -> dict[str, Any]:
    from olft.config import RunConfig

    return {k: v for k, v in _flatten(RunConfig().to_dict()).items() if k != "data.glue_dir"}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    a = {**_defaults(), **OLDER, **a}  # a field an older olft did not write counts as what it did
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[-1] in IGNORED_ON_RESUME or key in IGNORED_ON_RESUME:
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            diffs.append(f"{key}: {a.get(key, '<unset>')!r} in the folder, {b.get(key, '<unset>')!r} now")
    return diffs


class RunFolder:
    """Reads and writes one run folder; only the writer process (rank 0) touches disk."""

    def __init__(self, path: Path, config: dict, overwrite: bool = False, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        if self.path.exists() and not self.path.is_dir():
            raise OlftError(f"Output path {self.path} is a file, not a folder. Pass --out with a folder path.")
        saved = self.path / "config.json"
        if overwrite and writer and self.path.exists():
            shutil.rmtree(self.path)
        elif saved.is_file() and not overwrite:  # other processes leave an --overwrite to rank 0
            try:
                old = json.loads(saved.read_text())
            except json.JSONDecodeError as exc:
                raise OlftError(f"{saved} is unreadable ({exc}). Pass --overwrite to start this run folder afresh.") from exc
            diffs = config_differences(old, config)
            if diffs:
                listing = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
                raise OlftError(
                    f"Run folder {self.path} holds a run with a different config ({listing}). Use another "
                    "--out, rerun with the same options to resume, or pass --overwrite to start afresh."
                )
        self.config = config
        if writer:
            self._check_writable()

    def _check_writable(self) -> None:
        """Fail before any work if the folder (or the parent it will be made in) is read-only."""
        import os

        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise OlftError(f"Cannot create output folder {self.path}: {probe} is a file. Pass --out with a folder path.")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise OlftError(f"Cannot write to output folder {self.path} ({probe} is not writable). Pass --out with a writable folder.")

    def start(self) -> None:
        """Create the folder and record the config: called once the inputs have been validated."""
        if self.writer:
            self._make_writable()
            report.write_json(self.path / "config.json", self.config)
            self.mark_incomplete()

    def _make_writable(self) -> None:
        try:
            for sub in ("", "pieces", "weights", "checkpoints"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise OlftError(
                f"Cannot write to output folder {self.path}: {exc.strerror}. Pass --out with a writable folder."
            ) from exc

    # -- pieces ----------------------------------------------------------------------------------
    def _piece(self, kind: str, name: str) -> Path:
        return self.path / "pieces" / f"{kind}-{name}.json"

    def load_piece(self, kind: str, name: str) -> dict | None:
        path = self._piece(kind, name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes, but never trust a damaged piece

    def piece_names(self, kind: str) -> list[str]:
        """Names of the saved pieces of `kind`, sorted."""
        return sorted(p.name[len(kind) + 1 : -5] for p in (self.path / "pieces").glob(f"{kind}-*.json"))

    def save_piece(self, kind: str, name: str, data: dict) -> None:
        if self.writer:
            report.write_json(self._piece(kind, name), data)

    def weights_path(self, name: str) -> Path:
        return self.path / "weights" / f"{safe_name(name)}.safetensors"

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{safe_name(name)}.pt"

    def write_results(self, results: dict) -> None:
        if self.writer:
            report.write_json(self.path / "results.json", results)

    def finish(self, results: dict) -> None:
        if not self.writer:
            return
        report.write_json(self.path / "results.json", results)
        report.atomic_write(self.path / "table.md", report.table_md(results))
        report.plot_layers(results, self.path / "layers.png")
        shutil.rmtree(self.path / "checkpoints", ignore_errors=True)

    def mark_incomplete(self) -> None:
        """Drop the files that only a complete run may have (from an earlier, different run)."""
        if self.writer:
            for stale in ("table.md", "layers.png"):
                (self.path / stale).unlink(missing_ok=True)


def fault_point(name: str) -> None:
    """Die here, as a killed process would, when $OLFT_KILL_AT names this point.

    Lets the tests kill a run at an exact place (mid-selection, mid-training) instead of racing
    a timer; with the variable unset it costs one dictionary lookup.
    """
    import os
    import signal

    if os.environ.get("OLFT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def safe_name(name: str) -> str:
    """File name for a strategy ('layers=0+3' -> 'layers-0_3')."""
    return name.replace("=", "-").replace("+", "_").replace("/", "_")
