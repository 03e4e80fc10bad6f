"""Re-evaluate a run folder: reload its model, put each strategy's saved weights back, score.

Shows what is finished in the folder and whether the saved weights reproduce the metrics in
results.json (they should, to float precision: evaluation runs the plain forward).
"""

from __future__ import annotations

from pathlib import Path

from olft.pipeline import Session, evaluate_saved
from olft.predict import load_weights
from olft.runfolder import describe_status, read_run, safe_name


def evaluate_run(folder: Path, quiet: bool = False) -> str:
    """The report `olft evaluate` prints: one line per strategy and split, every metric of the
    task re-scored (as `olft predict` prints them) beside the one in results.json, a metric
    undefined on the split named so with why, and the class a strategy predicted for every
    example of a split where results.json records it collapsed to one.

    Raises OlftError for a folder that is no run folder, and for a damaged weights file (before
    the model loads, with the fix: delete it and continue the run).
    """
    results, cfg = read_run(folder)
    saved = {}  # strategy -> its tensors; every file is read first, so a damaged one fails early
    for name in results.get("strategy_names", list(results["strategies"])):
        weights_path = folder / "weights" / f"{safe_name(name)}.safetensors"
        if name in results["strategies"] and weights_path.is_file():
            saved[name] = load_weights(weights_path)
    session = Session(cfg, quiet=quiet, train_split=False)  # scores the eval splits only
    lines = [f"run {folder}: {describe_status(folder)}"]
    for name in results.get("strategy_names", list(results["strategies"])):
        entry = results["strategies"].get(name)
        if name not in saved:
            lines.append(f"  {name}: not finished")
            continue
        for split, scores in evaluate_saved(session, entry["layers"], saved[name]).items():
            label = (entry.get("one_class") or {}).get(split)  # a collapsed strategy's score measures a constant answer
            collapsed = "" if label is None else f"predicts {label!r} for every example, "
            lines.append(f"  {name} {split}: {collapsed}{scores.text(entry['metrics'].get(split, {}))}")
    return "\n".join(lines)
