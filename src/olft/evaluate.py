"""Re-evaluate a run folder: reload its model, put each strategy's saved weights back, score.

Shows what is finished in the folder and whether the saved weights reproduce the metrics in
results.json (they should, to float precision: evaluation runs the plain forward).
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file

from olft.pipeline import Session, evaluate_saved
from olft.runfolder import describe_status, read_run, safe_name


def evaluate_run(folder: Path, quiet: bool = False) -> str:
    results, cfg = read_run(folder)
    session = Session(cfg, quiet=quiet)
    metric = results["metric"]
    lines = [f"run {folder}: {describe_status(folder)}"]
    for name in results.get("strategy_names", list(results["strategies"])):
        entry = results["strategies"].get(name)
        weights_path = folder / "weights" / f"{safe_name(name)}.safetensors"
        if entry is None or not weights_path.is_file():
            lines.append(f"  {name}: not finished")
            continue
        metrics = evaluate_saved(session, entry["layers"], load_file(str(weights_path)))
        for split, values in metrics.items():
            saved = entry["metrics"][split][metric]
            lines.append(f"  {name} {split}: {metric}={values[metric]:.4f} (results.json: {saved:.4f})")
    return "\n".join(lines)
