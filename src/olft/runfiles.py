"""Where a run folder keeps each strategy's files, and reading a folder without taking its lock.

`olft evaluate` and `olft predict` read a finished (or running) folder: its results.json and
config.json (`read_run`), one line on its state (`describe_status`), the candidates it kept
(`finished_candidates`) and its finished probe stage (`probe_stage`), and the weights and checkpoint of a strategy (`weights_file`,
`checkpoint_file`); the work a folder keeps (`kept_work`) and the command that continues it
(`continue_command`). None of them needs `olft.runfolder.RunFolder`, which writes and holds the lock.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from olft import runlock
from olft.errors import OlftError
from olft.ownership import saved_config, work_files


def weights_file(folder: Path, name: str) -> Path:
    """Where strategy `name`'s tuned module and head lie in run folder `folder` (readers such as
    `olft evaluate` and `olft predict` need no RunFolder, which takes the lock)."""
    return Path(folder) / "weights" / f"{safe_name(name)}.safetensors"


def checkpoint_file(folder: Path, name: str) -> Path:
    """Where strategy `name`'s mid-training checkpoint lies in run folder `folder` (as `weights_file`)."""
    return Path(folder) / "checkpoints" / f"{safe_name(name)}.pt"


def folder_status(path: Path) -> str | None:
    try:
        return json.loads((Path(path) / "results.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def finished_candidates(path: Path) -> dict[int, dict[int, float | None]]:
    """The candidates whose pieces a run folder keeps, as {steps: {layer: score}} sorted by steps
    and layer (pieces/candidate-<layer>-<steps>.json): a selection's first stage at its steps, and
    each --selection-adaptive retraining at twice the last. A score is None where the piece records
    none or cannot be read (the layer is still finished: its piece is there)."""
    found: dict[int, dict[int, float | None]] = {}
    for piece in (Path(path) / "pieces").glob("candidate-*.json"):
        layer, _, steps = piece.stem.removeprefix("candidate-").partition("-")
        if layer.isdigit() and steps.isdigit():
            try:
                score = json.loads(piece.read_text()).get("score")
            except (OSError, ValueError, AttributeError):
                score = None
            found.setdefault(int(steps), {})[int(layer)] = float(score) if isinstance(score, (int, float)) else None
    return {steps: dict(sorted(found[steps].items())) for steps in sorted(found)}


def probe_stage(path: Path) -> dict | None:
    """A run folder's finished probe stage (pieces/probe.json, `select.probe_piece`: every candidate's
    probe score, the ranking and the finalists), read without the lock; None where it has none or
    it cannot be read."""
    try:
        piece = json.loads((Path(path) / "pieces" / "probe.json").read_text())
    except (OSError, ValueError):
        return None
    return piece if isinstance(piece, dict) and isinstance(piece.get("candidates"), list) else None


def data_note(results: dict, data_sha256: dict[str, str]) -> str | None:
    """'note: the validation examples differ from those the run scored (...)' for the splits whose
    examples (`data.fingerprint`, per split) hash otherwise than results.json's `data_sha256` records;
    None when they match, or for an older folder that records none. Said, not refused, by `olft
    evaluate` and `olft predict --split`: re-scoring edited data is what they were asked to do, but a
    score that moved because the data changed must not read as the saved weights scoring differently."""
    saved = results.get("data_sha256") or {}
    changed = [s for s, sha in data_sha256.items() if s in saved and saved[s] != sha]
    if not changed:
        return None
    return (f"note: the {', '.join(changed)} examples differ from those the run scored (the data was edited since, "
            "or another --glue-dir/--data is read): the scores below are on today's data, the results.json ones on the run's")


def describe_status(path: Path) -> str:
    """One line on a run folder's state for readers: a live run, a dead one, or how it ended."""
    held, holder = runlock.probe(path)
    status = folder_status(path)
    if held:
        return f"RUNNING in {runlock.describe(holder)}"
    if status == "running":
        return (f"INTERRUPTED: the run by {runlock.describe(holder)} stopped without finishing (killed?); rerun its "
                "command to continue")  # fmt: skip
    return "complete" if status == "complete" else f"INCOMPLETE ({status or 'no status'})"


def safe_name(name: str) -> str:
    """File name for a strategy ('layers=0+3' -> 'layers-0_3')."""
    return name.replace("=", "-").replace("+", "_").replace("/", "_")


def read_run(folder: Path) -> tuple[dict, Any]:
    """(results.json, RunConfig) of a run folder; OlftError when either is missing or unreadable."""
    from olft.config import RunConfig

    results_path, config_path = folder / "results.json", folder / "config.json"
    if not folder.exists():
        raise OlftError(f"Run folder {folder} does not exist: give the folder `olft run` or `olft train` wrote (its --out; "
                        "RunConfig.out in Python).")
    if folder.is_file():  # a file of the folder (its config.json, results.json, a weights file): the folder is meant
        raise OlftError(f"{folder} is a file, not a run folder: give the folder that holds it ({folder.parent}), as "
                        "`olft run` or `olft train` wrote it (its --out; RunConfig.out in Python).")
    if config_path.is_file() and not results_path.is_file() and saved_config(folder) is not None:
        raise OlftError(_no_results(folder))
    if not results_path.is_file() or not config_path.is_file():
        raise OlftError(f"{folder} is not an olft run folder (no results.json/config.json): give the folder `olft run` or "
                        "`olft train` wrote (its --out; RunConfig.out in Python).")
    try:
        return json.loads(results_path.read_text()), RunConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError, OlftError) as exc:
        raise OlftError(f"{folder}: results.json or config.json is unreadable ({exc}).") from exc


# The subfolders whose files are finished work a rerun keeps (`kept_work`); curves/ only logs it.
WORK_FOLDERS = {"pieces": "finished piece", "weights": "tuned weights file", "checkpoints": "mid-training checkpoint"}


def kept_work(path: Path) -> list[str]:
    """What finished work run folder `path` keeps, as '2 finished pieces', '1 tuned weights file',
    ...: olft's whole files in pieces/, weights/ and checkpoints/ (a temporary file a kill left
    mid-write is no work). Empty for a folder whose run stopped before any work."""
    counts = []
    for sub, what in WORK_FOLDERS.items():
        n = len(work_files(path, sub))
        if n:
            counts.append(f"{n} {what}{'s' if n > 1 else ''}")
    return counts


def continue_command(folder: Path | None) -> str:
    """The shell command that continues a run folder where it stopped (a selection-only folder:
    to tuning its selected layer), from any directory: its own config.json, --out the folder."""
    where = shlex.quote(str(folder.resolve())) if folder is not None else "RUN_FOLDER"
    return f"olft run --config {where}/config.json --out {where}"


def _no_results(folder: Path) -> str:
    """Why a folder with olft's config.json but no results.json cannot be read, and what to do.

    A run writes results.json right after config.json, before any work (`api._begin`), so without
    pieces the run stopped before any work. With pieces (results.json deleted, or a copy of the
    folder made without it) the work is there: the run's own command, or `continue_command`,
    rebuilds results.json from the pieces and finishes what is left.
    """
    held, holder = runlock.probe(folder)
    if held:
        return (f"{folder} holds no results.json yet: a run is starting in it ({runlock.describe(holder)}). "
                "Read it again in a moment.")
    work = kept_work(folder)
    if not work:
        return (f"{folder} holds olft's config.json but no results.json: its run stopped before any work, so there is "
                "nothing to read yet. Run `olft run` (or `olft train`) with this --out first.")
    typed = f"`{holder['command']}` (in {holder.get('cwd')}), or " if holder and holder.get("command") else ""
    return (f"{folder} holds finished work ({', '.join(work)}) but no results.json: its run was INTERRUPTED (or "
            f"results.json was removed). Rerun the same command to continue it, keeping that work and rebuilding "
            f"results.json: {typed}from any directory `{continue_command(folder)}`.")
