"""Re-evaluate a run folder: reload its model, put each strategy's saved weights back, score.

Shows what is finished in the folder and whether the saved weights reproduce the metrics in
results.json (they should, to float precision: evaluation runs the plain forward).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from olft.config import RunConfig
from olft.errors import OlftError
from olft.pipeline import Session, evaluate_saved
from olft.runfolder import describe_status, safe_name


def evaluate_run(folder: Path, quiet: bool = False) -> str:
    results_path, config_path = folder / "results.json", folder / "config.json"
    if not results_path.is_file() or not config_path.is_file():
        raise OlftError(f"{folder} is not an olft run folder (no results.json/config.json). Pass --run the --out of `olft run`.")
    try:
        results = json.loads(results_path.read_text())
        cfg = RunConfig.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise OlftError(f"{folder}: results.json or config.json is unreadable ({exc}).") from exc
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
