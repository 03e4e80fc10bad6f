"""Re-evaluate a run folder: reload its model, put each strategy's saved weights back, score.

Shows what is finished in the folder and whether the saved weights reproduce the metrics in
results.json (they should, to float precision: evaluation runs the plain forward).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from olft.layerspec import parse_candidates, strategy_key
from olft.pipeline import Session, evaluate_saved
from olft.predict import load_weights
from olft.report import rates_text, resume_command
from olft.runfiles import checkpoint_file, data_note, describe_status, finished_candidates, probe_stage, read_run, weights_file
from olft.select import unfinished, unfinished_entry
from olft.selectionmd import probe_text
from olft.train import checkpoint_step
from olft.verdicts import choice_caveat


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
        weights_path = weights_file(folder, name)
        if name in results["strategies"] and weights_path.is_file():
            saved[name] = load_weights(weights_path)
    session = Session(cfg, quiet=quiet, train_split=False) if saved else None  # scores the eval splits only
    status = describe_status(folder)
    lines = [f"run {folder}: {status}"]
    if session is not None and (note := data_note(results, session.data_sha256)):  # today's examples are not the run's
        lines.append(f"  {note}")
    sel = results.get("selection")
    if sel and sel.get("selected_layer") is not None:  # what a select-only folder is for: its choice
        caveat = None if sel.get("note") else choice_caveat(sel)  # no signal, or a tie: the layer alone would read as a finding
        how = sel.get("note") or f"selector {sel.get('selector')}"  # one candidate: nothing to choose
        lines.append(f"  selection: layer {sel['selected_layer']} ({how}{'; ' + caveat if caveat else ''})")
    selection_left = False
    if sel and sel.get("status") == "failed":  # every candidate trained for it failed: a rerun repeats it
        lines.append("  selection: failed: every candidate trained for it failed to train; "
                     + "; ".join(f"layer {c['layer']}: {c.get('error')}" for c in sel["candidates"] if c.get("steps")))
    elif sel is None or unfinished(sel):
        # A stopped selection's pieces: its finished probe stage (probe-halving, auto) and trained candidates.
        kept, probe = finished_candidates(folder), probe_stage(folder)
        if selection_left := bool(kept or probe):
            lines.append(f"  selection: not finished{_probe_text(probe, cfg, bool(kept))}"
                         + (f"; {_candidates_text(kept, results, cfg, probe)}" if kept else ""))
    failed = results.get("failed") or {}
    # Table 1's order (olft, final, full, then layers=... by layer), whatever order the runs asked for them.
    for name in sorted(results.get("strategy_names", list(results["strategies"])), key=strategy_key):
        entry = results["strategies"].get(name)
        if name not in saved and name in failed:
            lines.append(f"  {name}: failed: {failed[name].get('error')}")
            continue
        if name not in saved and entry is not None:  # finished, its weights file gone (moved, or never copied)
            shown = (entry.get("metrics") or {}).get(results["eval_splits"][0], {}).get(results["metric"])
            score = "" if shown is None else f" ({results['metric']} {100 * shown:.1f} on {results['eval_splits'][0]} in results.json)"
            lines.append(f"  {name}: finished{score}, but its weights file {weights_file(folder, name)} is missing, so it "
                         "cannot be re-scored; put the file back, or rerun the strategy into another --out")
            continue
        if name not in saved:
            step = checkpoint_step(checkpoint_file(folder, name))
            resumes = "" if step is None else f"; its checkpoint at step {step} is resumed when the run continues"
            lines.append(f"  {name}: not finished{resumes}")
            continue
        for split, scores in evaluate_saved(session, entry["layers"], saved[name]).items():
            label = (entry.get("one_class") or {}).get(split)  # a collapsed strategy's score measures a constant answer
            collapsed = "" if label is None else f"predicts {label!r} for every example, "
            lines.append(f"  {name} {split}: {collapsed}{scores.text(entry['metrics'].get(split, {}))}")
    if rates := rates_text({n: results["strategies"][n] for n in saved}):  # what each strategy re-scored trained at
        lines.append(f"  {rates}")
    # Continuing helps a stopped run; a failed piece's run ended, and continuing would fail it again.
    left = [n for n in results.get("strategy_names", []) if n not in saved and n not in failed] or unfinished(sel) or selection_left
    if left and results.get("status") != "complete" and not status.startswith("RUNNING"):
        lines.append(f"  continue it (finished pieces are kept): {resume_command(folder, results)}")
    if failed or (sel or {}).get("status") == "failed":  # a non-finite loss (train.NonFiniteLoss) repeats at the same settings
        lines.append("  a rerun at these settings fails the same way: fix what the errors say (a lower learning rate), then "
                     "rerun with another --out or with --overwrite")
    return "\n".join(lines)


def _probe_text(probe: dict | None, cfg, trained: bool) -> str:
    """'. The probe scored 4 candidates (...): layer 0 -50.0; ... It passed layers 0, 1 on to
    training; no trained candidate finished yet' (table.md's words, `selectionmd.probe_text`), from
    the probe stage's piece; '' without one."""
    if not probe:
        return ""
    text = probe_text(unfinished_entry([], asdict(cfg.selection), probe))
    return f". {text}" + ("" if trained or not probe.get("finalists") else "; no trained candidate finished yet")


def _candidates_text(kept: dict[int, dict[int, float | None]], results: dict, cfg, probe: dict | None = None) -> str:
    """'candidates finished at 15 steps: layers 0-5 (6 of 6) (accuracy x100: layer 0 51.2, layer 1 49.8,
    ...); a longer round finished at 30 steps: layer 0 (accuracy x100: layer 0 53.0)', from the pieces
    kept (how many a retraining takes is decided when the selection resumes, so it is not counted);
    each layer's score where its piece records one (`finished_candidates`; the task metric once trained)."""
    try:  # after a probe, the layers it passed on to training
        total = len(probe["finalists"]) if probe and probe.get("finalists") else len(
            parse_candidates(cfg.selection.candidates, results["num_layers"]))
    except Exception:  # noqa: BLE001 - only the count is lost
        total = None
    parts = []
    for i, (steps, finished) in enumerate(kept.items()):
        layers = list(finished)
        of = f" ({len(layers)} of {total})" if i == 0 and total else ""
        # A later, longer round: a halving rung or an --selection-adaptive retraining (the pieces do not say which).
        what = "candidates finished" if i == 0 else "a longer round finished"
        scores = {k: v for k, v in finished.items() if v is not None}
        # Trained: the task metric in points (x100), as table.md's candidate table; 0 steps: a proxy's own number.
        if steps:
            scored = f" ({results.get('metric', 'score')} x100: " + ", ".join(f"layer {k} {100 * v:.1f}" for k, v in scores.items())
        else:
            scored = " (proxy score: " + ", ".join(f"layer {k} {v:.3f}" for k, v in scores.items())
        scored = scored + ")" if scores else ""
        parts.append(f"{what} at {steps} steps: layer{'s' if len(layers) > 1 else ''} {_span(layers)}{of}{scored}")
    return "; ".join(parts)


def _span(layers: list[int]) -> str:
    """0-5 for a run of consecutive layers, else 0,2,4."""
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))
