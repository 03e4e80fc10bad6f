"""Results as data: results.json, the paper's tables in Markdown, weights (the per-layer plot: `olft.plots`).

table.md's selection section (the candidates' table, its notes, how sure the choice is) is
`olft.selectionmd`; this module puts it after Table 1 and Table 2.

Every file is written through `olft.atomic` (a temporary name renamed into place), so a run killed mid-write
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

from olft.atomic import atomic_path, atomic_write, write_json  # noqa: F401 (callers use report.write_json)
from olft.layerspec import strategy_key
from olft.runfiles import continue_command
from olft.select import finished_selection, unfinished
from olft.selectionmd import (
    candidate_table,
    examples_used,
    protocol_lines,
    retrained_lines,
    unfinished_lines,
    untrained_lines,
    verdict_lines,
)
from olft.verdicts import UNDEFINED, fmt_score, loss_name, plural

# The name under which results.json's `timing` compares the selection's total time (`runtiming.folder_timing`).
SELECTION = "selection"

# Said where the selected layer is the model's last (possible with --candidates all).
FINAL_LAYER_NOTE = "the selected layer is the final layer: OLFT and final-layer tuning train the same module"

PACKAGES = ("olft", "torch", "transformers", "peft", "accelerate", "safetensors", "scikit-learn", "datasets")


def save_weights(path: Path, weights: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    """Write `weights` as safetensors with `meta` as its metadata, the same bytes for the same
    tensors and metadata (safetensors writes metadata in its hash map's order, which changes from
    one process to the next; see `_sorted_metadata`)."""
    from safetensors.torch import save

    atomic_write(path, _sorted_metadata(save({k: v.contiguous().cpu() for k, v in weights.items()}, metadata=meta)))


def _sorted_metadata(blob: bytes) -> bytes:
    """A safetensors file (8-byte little-endian header length, JSON header padded with spaces,
    data) with its `__metadata__` keys sorted: the same content, so the header keeps its length."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + n])
    if "__metadata__" not in header:
        return blob
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    return blob[:8] + text.ljust(n) + blob[8 + n :] if len(text) <= n else blob


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


def optimistic_scores(results: dict) -> dict[str, list[str]]:
    """Strategy -> the eval splits whose scores of it are optimistic: under --selection-data
    validation the candidates were scored on the first eval split, so OLFT's score on that split
    is the best of several tries on it (the paper's protocol). Empty under --selection-data train."""
    sel, splits = results.get("selection") or {}, results.get("eval_splits") or []
    if sel.get("protocol") != "validation" or not splits or "olft" not in (results.get("strategies") or {}):
        return {}
    return {"olft": [splits[0]]}


def resume_command(folder: Path | None, results: dict) -> str:
    """The command that continues an unfinished folder: `olft select` for one that only selects
    (no strategy named), else `olft run` on its config.json (which names train's layers=... too)."""
    command = continue_command(folder)
    return command.replace("olft run", "olft select", 1) if not results.get("strategy_names") else command


def python_form(command: str, folder: Path | None) -> str:
    """The Python call that does what `command` (`continue_command` or `resume_command`) does on
    run folder `folder`, as table.md words it after the command: a folder made through the Python
    API (`olft.run`, `olft.select_layer`) holds nothing that says so, so its reader may not have the
    CLI in mind."""
    call = "olft.select_layer" if command.startswith("olft select") else "olft.run"
    where = str(folder.resolve()) if folder is not None else "RUN_FOLDER"
    # config.json is the latest run's config (an add-on `olft train --layers 1` rewrites it), not the
    # one that began the folder: the command above reads that file, and so does the call. Its `out`
    # is as typed (maybe relative), so the call names the folder, as the command's --out does; and
    # given=() since config.json records every option, none of them the reader's to be warned of.
    # read_text, not open(): a file left open warns (ResourceWarning) under `python -W default`.
    return (f"from Python, `import json, pathlib, olft; cfg = olft.RunConfig.from_dict(json.loads(pathlib.Path("
            f"{where + '/config.json'!r}).read_text())); "
            f"cfg.out = {where!r}; {call}(cfg, given=())` does the same")


# How a run that has not ended (or ended early) left its folder, as table.md's banner says it.
UNFINISHED_STATUS = {
    "running": "written while a run was working on this folder; if none holds it now (`olft evaluate --run` says), "
               "that run was killed before it finished",
    "interrupted": "its run was interrupted (Ctrl-C or SIGTERM) before it finished",
    "stopped by an error": "its run stopped on an error before it finished",
}  # fmt: skip


def _unfinished_banner(results: dict, folder: Path | None) -> list[str]:
    """table.md's first line while its folder's run has not ended, or stopped early: this table
    shows only what was finished, and what is not; none once the run ended (`_end`)."""
    why = UNFINISHED_STATUS.get(results.get("status"))
    if why is None:
        return []
    done = {*results["strategies"], *(results.get("failed") or {})}
    missing = [n for n in results.get("strategy_names") or [] if n not in done]
    sel = results.get("selection")
    if not finished_selection(results) and ("olft" in missing or unfinished(sel) or not results.get("strategy_names")):
        missing.insert(0, "the selection")
    error = f" ({results['error']})" if results.get("status") == "stopped by an error" and results.get("error") else ""
    if missing:
        left, then = f" Not finished: {', '.join(missing)}.", "continues the folder, keeping them"
    else:  # stopped after its last piece, in the run's end (`api._end`): said, not an unfinished nothing
        left, then = f" {ENDING_STOPPED}", "ends it, keeping every piece"
    command = resume_command(folder, results)
    return ["", f"**UNFINISHED:** {why}{error}. This table shows only the pieces finished by then.{left} "
            f"`{command}` {then}; {python_form(command, folder)}."]  # fmt: skip


# The banner's words where every piece the folder names had finished: what is left is the run's end
# (`runfolder.RunFolder.finish`), which a stop there (a kill while the plots are drawn) left undone.
ENDING_STOPPED = ("No piece is left to train; not finished: the run's end (layers.png and loss.png, which may be missing "
                  "or stale, the checkpoints' removal, results.json's final status).")


def made_by(results: dict) -> str:
    """The subcommand that made a run folder, from its results.json: `olft train` where every
    strategy it names is explicit layers (`layers=...`, which train names its one), else `olft run`."""
    names = results.get("strategy_names") or list(results.get("strategies") or {})
    return "olft train" if names and all(n.startswith("layers=") for n in names) else "olft run"


def table_md(results: dict, folder: Path | None = None) -> str:
    """Table 1 (scores, chosen layer) and Table 2 (time, parameters) in the paper's layout, then
    the selection. A table with no rows is left out: a selection-only folder (`olft select`) has
    neither, and says instead how to continue it (its run folder `folder`, where known). Both
    tables list their strategies in `layerspec.strategy_key`'s order, whatever the folder's."""
    task, metric = results["task"], results["metric"]
    strategies, failed = results["strategies"], results.get("failed") or {}
    lines = [f"# {results['model']} on {task} ({results['method']})", *_unfinished_banner(results, folder)]
    if strategies or failed:
        lines += _score_table(results)
        lines += _cost_table(results)
        lines += _failure_lines(results)
    elif finished_selection(results) and not (results.get("strategy_names") and results.get("status") in UNFINISHED_STATUS):
        command = continue_command(folder)  # whichever made it: `olft select` or `olft.select_layer`
        lines += ["", f"Selection only (`olft select` / `olft.select_layer`): no layer was tuned. `{command}` "
                  f"continues this folder to tuning, keeping this selection; {python_form(command, folder)}."]  # fmt: skip
    sel = results.get("selection")
    if unfinished(sel) or every_candidate_failed(sel):
        # Its run over (not running, not interrupted), or its record a chosen-nothing: a selection whose
        # candidates all failed has failed.
        ended = not unfinished(sel) or results.get("status") not in ("running", "interrupted")
        command = resume_command(folder, results)
        lines += unfinished_lines(sel, metric, command, ended, python_form(command, folder))
    elif sel and sel.get("note"):  # one candidate (`runselection.one_candidate`): nothing trained, scored or chosen
        lines += ["", f"Selection: {sel['note']}. Layer {sel['selected_layer']}, the only candidate, is tuned with no "
                  "selection run (no candidate trained or scored, no selection time spent)."]
        if sel["selected_layer"] == results.get("num_layers", 0) - 1:
            lines.append(FINAL_LAYER_NOTE[0].upper() + FINAL_LAYER_NOTE[1:] + ".")
    elif sel:
        candidate_timing = (results.get("timing") or {}).get("candidates") or {}
        run_of = run_marks(candidate_timing)
        sel_cpu = "" if sel.get("cpu_seconds") is None else f", {sel['cpu_seconds'] / 60:.2f} min CPU"
        apart = " (not included in OLFT's train time above)" if "train_seconds" in (strategies.get("olft") or {}) else ""
        lines += [
            "",
            f"Selection ({sel['protocol']}): {plural(len(sel['candidates']), 'candidate')}, {examples_used(sel)}, "
            f"{sel['seconds'] / 60:.2f} min wall{sel_cpu}{run_of.get(SELECTION, '')}{apart}; selected layer {sel['selected_layer']}"
            f"{' by lowest ' + loss_name(sel.get('protocol')) if sel.get('metric') == 'loss' else ''}.",
        ]
        if sel.get("selected_layer") is not None and sel["selected_layer"] == results.get("num_layers", 0) - 1:
            lines.append(FINAL_LAYER_NOTE[0].upper() + FINAL_LAYER_NOTE[1:] + ".")
        lines += protocol_lines(sel, results)
        lines += untrained_lines(sel)
        lines += _timing_notes(candidate_timing, "The selection's times (its total and its candidates')")
        lines += verdict_lines(sel, metric)
        lines += retrained_lines(sel)
        lines += candidate_table(sel, metric, run_of)
    return "\n".join(lines) + "\n"


def every_candidate_failed(sel: dict | None) -> bool:
    """True when `sel` (results.json's `selection`, finished or `unfinished_entry`) chose no layer and
    every candidate it holds failed to train: no score, an error instead."""
    cands = [c for c in (sel or {}).get("candidates") or [] if c.get("steps")]  # a probe's (0 steps) trains nothing
    return bool(cands) and sel.get("selected_layer") is None and all(c.get("score") is None for c in cands)


def _failure_lines(results: dict) -> list[str]:
    """Why each failed strategy failed, its error as results.json's `failed` records it (which names
    the step and the fix); OLFT's, where its selection failed, points to the selection section, whose
    candidates' errors say why (its own "see the errors above" is the console's)."""
    failed = results.get("failed") or {}
    if not failed:
        return []
    sel = results.get("selection")
    lines = [f"- {name}: " + ("its selection failed (below: every candidate failed to train)."
                              if name == "olft" and not s.get("layers") and every_candidate_failed(sel) else s.get("error", ""))
             for name, s in failed.items()]  # fmt: skip
    return ["", "Failed (results.json's `failed`):", "", *lines]


def _score_table(results: dict) -> list[str]:
    """Table 1: each strategy's (and failed strategy's) scores on every evaluation split."""
    metric, strategies = results["metric"], results["strategies"]
    lines = [
        "",
        f"Table 1: {metric} on {results['eval_splits'][0]} (x100); OLFT shows its chosen layer (l-i = layer i, 0-based).",
        "",
        "| strategy | layers | " + " | ".join(results["eval_splits"]) + " |",
        "|---|---|" + "---|" * len(results["eval_splits"]),
    ]
    optimistic = optimistic_scores(results)
    for name, s in _in_order({**strategies, **(results.get("failed") or {})}):  # a failed strategy's scores read "failed"
        layers = _layers_label(s["layers"], results["num_layers"])
        scores = []
        for split in results["eval_splits"]:
            value = s.get("metrics", {}).get(split, {}).get(metric) if s.get("metrics") else None
            scores.append(shown_score(s, split, metric, value) + (f" l-{s['layers'][0]}" if name == "olft" and value is not None else "")
                          + collapsed_mark(s, split) + (" ‡" if split in optimistic.get(name, []) else ""))  # fmt: skip
        lines.append(f"| {name} | {layers} | " + " | ".join(scores) + " |")
    notes = [f"‡ Optimistic: {OPTIMISTIC.format(split=split)}" for split in optimistic.get("olft", [])]
    rates = rates_text(strategies)
    return (lines + _collapsed_notes(strategies, results["eval_splits"]) + _undefined_notes(strategies, metric)
            + (["", *notes] if notes else []) + (["", f"{rates[0].upper()}{rates[1:]}."] if rates else []))


def rates_text(strategies: dict) -> str:
    """The learning rates results.json's `strategies` trained at (each entry's `lr`, AdamW's peak
    rate): "learning rate 0.001 (every strategy)", or each strategy's where they differ
    (--strategy-lr), "learning rates: olft 0.001, full 0.0003". Empty where no entry records one
    (a folder from before olft recorded them)."""
    rates = {name: s["lr"] for name, s in _in_order(strategies) if s.get("lr") is not None}
    if not rates:
        return ""
    if len(set(rates.values())) == 1:
        every = "every strategy" if len(rates) == len(strategies) else ", ".join(rates)
        return f"learning rate {next(iter(rates.values())):g} ({every})"
    return "learning rates: " + ", ".join(f"{name} {lr:g}" for name, lr in rates.items())


def shown_score(s: dict, split: str, metric: str, value: float | None) -> str:
    """A strategy `s`'s `metric` on `split` as the tables show it: `UNDEFINED` where it has no value
    there (`TuneResult.undefined`), else its points (`fmt_score`)."""
    return UNDEFINED if metric in ((s.get("undefined") or {}).get(split) or {}) else fmt_score(value)


def _undefined_notes(strategies: dict, metric: str) -> list[str]:
    """Table 1's footnotes to its `UNDEFINED` entries: why `metric` has no value on each split, as
    `olft evaluate` says it (`tasks.score`), naming the strategies where not all share the reason."""
    by_reason: dict[tuple[str, str], list[str]] = {}
    for name, s in _in_order(strategies):
        for split, why in (s.get("undefined") or {}).items():
            if metric in why:
                by_reason.setdefault((split, why[metric]), []).append(name)
    notes = [f"§ {metric} on {split} is {why}" + ("" if len(names) == len(strategies) else f" ({', '.join(names)})")
             + " (results.json's number for it is a stand-in that training and selection rank by, not a score)."
             for (split, why), names in by_reason.items()]  # fmt: skip
    return ["", *notes] if notes else []


# Table 1's footnote to an optimistic score, and the selection section's line under --selection-data validation.
OPTIMISTIC = ("--selection-data validation chose OLFT's layer by its score on this same {split} split (the paper's "
              "protocol), so that score is the best of several tries on it, not an unbiased estimate; --selection-data "
              "train keeps {split} out of the choice.")


def _in_order(entries: dict) -> list[tuple[str, Any]]:
    """A table's rows in `layerspec.strategy_key`'s order (olft, final, full, then layers=... by
    layer), whatever order a folder's pieces were run or found in (results.json from before
    olft ordered its strategies included)."""
    return sorted(entries.items(), key=lambda item: strategy_key(item[0]))


def collapsed_mark(s: dict, split: str) -> str:
    """A dagger after a score of `split` on which the strategy predicted one class for every example."""
    return " †" if split in (s.get("one_class") or {}) else ""


def collapsed_text(name: str, label: str, split: str) -> str:
    """What a strategy's collapse to one class means, as the run's warning and table.md say it.
    (Not "its score is that class's share": true of accuracy only, not of F1 or MCC.)"""
    return (f"{name} predicts {label!r} for every {split} example: it collapsed to one class, so its score measures "
            "that constant answer, not what the layers learned.")


def _collapsed_notes(strategies: dict, splits: list[str]) -> list[str]:
    """The footnotes to `collapsed_mark`'s daggers: which class, on which split."""
    notes = [f"† {collapsed_text(name, s['one_class'][split], split)}"
             for name, s in _in_order(strategies) for split in splits if split in (s.get("one_class") or {})]  # fmt: skip
    return ["", *notes] if notes else []


def _cost_table(results: dict) -> list[str]:
    """Table 2: each strategy's time (wall and CPU minutes of training plus building its training
    split's cache) and PEFT parameters, as % of all-layer tuning, and OLFT's whole-run cost.

    time % is of CPU seconds when every strategy recorded them (`train_cpu_seconds`; with one
    torch thread they count the work, whatever else the machine ran, as benchmarks/paper_report.py
    uses them), else of wall seconds (results.json from before olft recorded CPU time); the
    legend says which.
    """
    strategies = {n: s for n, s in results["strategies"].items() if "train_seconds" in s}
    if not strategies:  # every strategy failed: Table 1 says so, and there is no cost to show
        return []
    full = results["strategies"].get("full") or {}
    all_params = results.get("all_layer_peft_params") or full.get("peft_params")
    cpu = all(s.get("train_cpu_seconds") for s in strategies.values())
    key, basis = ("train_cpu_seconds", "CPU") if cpu else ("train_seconds", "wall")
    lines = [
        "",
        "Table 2: training time and trainable PEFT parameters (percentages relative to all-layer tuning). Times "
        "count training plus building its training split's frozen-layer cache: wall = elapsed minutes; CPU = the "
        "training process's CPU minutes (with one torch thread, the work done whatever else the machine ran). "
        f"time % is of {basis} time" + ("." if cpu else " (not every strategy recorded CPU time)."),
        "",
        f"| strategy | wall (min) | CPU (min) | time % ({basis}) | PEFT params (M) | param % | score |",
        "|---|---|---|---|---|---|---|",
    ]
    timing = (results.get("timing") or {}).get("strategies") or {}
    optimistic = optimistic_scores(results)  # Table 2's score is Table 1's first split: the same mark
    run_of = run_marks(timing)
    for name, s in _in_order(strategies):
        time_pct = f"{100 * s[key] / full[key]:.1f}" if full.get(key) else "-"
        cpu_min = f"{s['train_cpu_seconds'] / 60:.2f}" if s.get("train_cpu_seconds") else "-"
        p = s["peft_params"]
        param_pct = f"{100 * p / all_params:.2f}" if all_params else "-"
        lines.append(f"| {name} | {s['train_seconds'] / 60:.2f}{run_of.get(name, '')} | {cpu_min} | {time_pct} | {p / 1e6:.4f} | "
                     f"{param_pct} | {shown_score(s, results['eval_splits'][0], results['metric'], s.get('score'))}{collapsed_mark(s, results['eval_splits'][0])}"
                     f"{' ‡' if results['eval_splits'][0] in optimistic.get(name, []) else ''} |")  # fmt: skip
    lines += _timing_notes(timing, "Table 2's times")
    return lines + _whole_run(results.get("selection"), strategies.get("olft"), full, cpu, results.get("train_examples"), run_of)


def _whole_run(sel: dict | None, olft: dict | None, full: dict, cpu: bool, train_examples: int | None = None,
               run_of: dict[str, str] | None = None) -> list[str]:
    """OLFT's whole run (selection plus its training) as % of all-layer training, on Table 2's
    basis; on wall time when Table 2's is CPU but the selection recorded no CPU time. Each part is
    marked with the runs that timed it (`run_marks` of Table 2's timing, which compares the
    selection's total too: `runtiming.folder_timing`) when they were more than one. Where
    selection took longer than OLFT's training, a line says that its cost is set by the selection
    budget, not by the training set (a small --max-train-samples makes it look large)."""
    if not sel or not olft or not full.get("train_seconds"):
        return []
    why = "; this selection recorded no CPU time" if cpu and sel.get("cpu_seconds") is None else ""
    cpu = cpu and not why
    sel_s, train_s, full_s = (sel["cpu_seconds"], olft["train_cpu_seconds"], full["train_cpu_seconds"]) if cpu else (
        sel["seconds"], olft["train_seconds"], full["train_seconds"])  # fmt: skip
    run_of = run_of or {}
    lines = ["", f"OLFT's whole run (selection {sel_s / 60:.2f} min{run_of.get(SELECTION, '')} + its training "
             f"{train_s / 60:.2f} min{run_of.get('olft', '')}, "
             f"{'CPU' if cpu else 'wall'} time{why}) = {100 * (sel_s + train_s) / full_s:.1f} % of all-layer training."]
    if sel_s > train_s:
        per = sel.get("train_examples")
        budget = (f" ({per} selection examples per candidate, against {train_examples} training examples here)"
                  if per and train_examples else "")  # fmt: skip
        lines.append(f"Selection took longer than OLFT's training: its cost is set by the selection budget{budget} "
                     f"and the {sel.get('selector', 'chosen')} selector, not by the training set, so its share "
                     "shrinks as the training set grows (docs/selection.md).")
    return lines


def run_marks(timing: dict) -> dict[str, str]:
    """Piece name -> ' (first run)', the label of the run that timed it, for a table's time cell
    (' (first run + continued run)' for a total that runs timed in parts: the selection's);
    empty unless the shown times come from more than one run (one run needs no mark)."""
    runs = timing.get("runs") or []
    if len(runs) < 2:
        return {}
    labels: dict[str, list[str]] = {}
    for r in runs:
        for n in r["pieces"]:
            labels.setdefault(n, []).append(r["label"])
    return {n: f" ({' + '.join(these)})" for n, these in labels.items()}


def _run_words(r: dict) -> str:
    """'first run: process 12 on h, cpu, 1 torch thread, 1 process, started ...' (a `compare_timing` run)."""
    threads = r.get("torch_threads")
    counts = ("" if threads is None else f", {plural(threads, 'torch thread')}") + (
        "" if r.get("world_size") is None else f", {r['world_size']} process{'' if r['world_size'] == 1 else 'es'}")
    return f"{r['label']}: process {r['pid']} on {r['host']}, {r.get('device')}{counts}, started {r['started']}"


def _timing_notes(timing: dict, what: str) -> list[str]:
    """Lines flagging times that do not compare (see `runtiming.compare_timing`); none when they do,
    and none when every shown time came from one run with its time whole (recorded, not resumed)."""
    if timing.get("comparable", True):
        return []
    notes = []
    if len(timing["runs"]) > 1:
        runs = "; ".join(_run_words(r) for r in timing["runs"])
        fields = [f for f in timing["differs_in"] if f != "run"]
        differ = f", which differ in {', '.join(fields)}" if fields else ""
        notes.append(f"they were timed in {len(timing['runs'])} runs ({runs}){differ}; each time is marked with its run")
    if timing["unrecorded"]:
        one = len(timing["unrecorded"]) == 1
        notes.append(f"{', '.join(timing['unrecorded'])} carr{'ies' if one else 'y'} no record of the run that timed "
                     f"{'it' if one else 'them'}")  # fmt: skip
    partial = timing.get("partial_time", timing["resumed_mid_training"])  # absent: an older olft's, every one partial
    summed = [n for n in timing["resumed_mid_training"] if n not in partial]
    if summed:
        one = len(summed) == 1
        notes.append(f"{', '.join(summed)} resumed from a checkpoint, so {'its' if one else 'their'} time adds the spans of "
                     "the runs before and after it (steps a stopped run took past its last checkpoint are not counted)")
    if partial:
        one = len(partial) == 1
        notes.append(f"{', '.join(partial)} resumed from a checkpoint, so {'its' if one else 'their'} "
                     "time counts only the steps after it")  # fmt: skip
    return ["", f"**Timings do not compare:** {what} are not from one uninterrupted run: " + "; ".join(notes)
            + ". Rerun in one process (another --out, or --overwrite) for times that compare."]  # fmt: skip


def _layers_label(layers: list[int], n: int) -> str:
    if len(layers) == n and n > 1:
        return f"all ({n})"
    return ",".join(map(str, layers))
