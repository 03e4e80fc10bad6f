"""Results as data: results.json, the paper's tables in Markdown, the per-layer plot, weights.

Every file is written to a temporary name and renamed into place, so a run killed mid-write
never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("olft", "torch", "transformers", "peft", "accelerate", "safetensors", "scikit-learn", "datasets")


def atomic_write(path: Path, data: bytes | str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_weights(path: Path, weights: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    atomic_write(path, save({k: v.contiguous().cpu() for k, v in weights.items()}, metadata=meta))


def environment() -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5, check=False
        )
        commit = proc.stdout.strip() if proc.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "versions": versions,
        "git_commit": commit,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }


def _fmt_score(value: float | None) -> str:
    return "failed" if value is None else f"{100 * value:.1f}"


def table_md(results: dict) -> str:
    """Table 1 (scores, chosen layer) and Table 2 (time, parameters) in the paper's layout."""
    task, metric = results["task"], results["metric"]
    strategies = results["strategies"]
    full = strategies.get("full")
    all_params = results.get("all_layer_peft_params") or (full or {}).get("peft_params")
    full_time = (full or {}).get("train_seconds")
    lines = [
        f"# {results['model']} on {task} ({results['method']})",
        "",
        f"Table 1: {metric} on {results['eval_splits'][0]} (x100); OLFT shows its chosen layer (l-i = layer i, 0-based).",
        "",
        "| strategy | layers | " + " | ".join(results["eval_splits"]) + " |",
        "|---|---|" + "---|" * len(results["eval_splits"]),
    ]
    for name, s in strategies.items():
        layers = _layers_label(s["layers"], results["num_layers"])
        scores = []
        for split in results["eval_splits"]:
            value = s.get("metrics", {}).get(split, {}).get(metric) if s.get("metrics") else None
            scores.append(_fmt_score(value) + (f" l-{s['layers'][0]}" if name == "olft" and value is not None else ""))
        lines.append(f"| {name} | {layers} | " + " | ".join(scores) + " |")
    lines += [
        "",
        "Table 2: training time and trainable PEFT parameters (percentages relative to all-layer tuning).",
        "",
        "| strategy | train time (min) | time % | PEFT params (M) | param % | score |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in strategies.items():
        if "train_seconds" not in s:
            continue
        t = s["train_seconds"]
        time_pct = f"{100 * t / full_time:.1f}" if full_time else "-"
        p = s["peft_params"]
        param_pct = f"{100 * p / all_params:.2f}" if all_params else "-"
        lines.append(f"| {name} | {t / 60:.2f} | {time_pct} | {p / 1e6:.4f} | {param_pct} | {_fmt_score(s.get('score'))} |")
    sel = results.get("selection")
    if sel:
        lines += [
            "",
            f"Selection ({sel['protocol']}): {len(sel['candidates'])} candidates, "
            f"{sel['train_examples']} training / {sel['score_examples']} scoring examples each, "
            f"{sel['seconds'] / 60:.2f} min (not included in OLFT's train time above); selected layer {sel['selected_layer']}"
            f"{' by lowest held-out loss' if sel.get('metric') == 'loss' else ''}.",
        ]
        if sel.get("flat"):
            lines.append("Every candidate ranked the same: the selected layer is the tie-break (lowest layer), not a signal.")
        elif len(sel.get("equivalent") or []) > 1:
            lines.append(f"Layers {sel['equivalent']} are within noise of each other ({sel['selector']} selector): equivalent choices.")
        elif sel.get("confidence") is not None:
            lines.append(f"{sel['selector']} selector: {sel['confidence']:.1f} standard errors ahead of the runner-up.")
        losses = any("loss" in c.get("metrics", {}) for c in sel["candidates"])
        lines += ["", "| layer | score |" + (" held-out loss |" if losses else "") + " seconds |",
                  "|---|---|" + ("---|" if losses else "") + "---|"]
        for c in sel["candidates"]:
            loss = c.get("metrics", {}).get("loss")
            cell = (" - |" if loss is None else f" {loss:.4f} |") if losses else ""
            lines.append(f"| {c['layer']} | {_fmt_score(c['score'])} |{cell} {c['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _layers_label(layers: list[int], n: int) -> str:
    if len(layers) == n and n > 1:
        return f"all ({n})"
    return ",".join(map(str, layers))


def plot_layers(results: dict, path: Path) -> bool:
    """Score per candidate layer, with the final-layer and all-layer scores as lines."""
    sel = results.get("selection")
    if not sel:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = [c for c in sel["candidates"] if c["score"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["layer"] for c in cands], [100 * c["score"] for c in cands], "o-", label=f"candidates ({sel['protocol']})")
    if sel.get("selected_layer") is not None:
        best = next(c for c in cands if c["layer"] == sel["selected_layer"])
        ax.plot([best["layer"]], [100 * best["score"]], "r*", markersize=14, label="selected")
    ax.set_xlabel("layer (0-based)")
    ax.set_ylabel(f"{results['metric']} x100")
    ax.set_title(f"{results['model']} / {results['task']} / {results['method']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name("." + path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return True
