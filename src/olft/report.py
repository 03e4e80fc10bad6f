"""Results as data: results.json, the paper's tables in Markdown, weights (the per-layer plot: `olft.plots`).

Every file is written through `olft.atomic` (a temporary name renamed into place), so a run killed mid-write
never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from olft.atomic import atomic_path, atomic_write, write_json  # noqa: F401 (callers use report.write_json)
from olft.select import finished_selection, probe_decided, unfinished
from olft.verdicts import (
    baseline_words,
    confidence_words,
    guessed_tie_text,
    layer_list,
    loss_name,
    no_signal_text,
    retrained_words,
    scored_on,
    tie_text,
    trained_no_signal_text,
)

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


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, the noun with an s unless n is 1: '1 candidate', '4 candidates'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def optimistic_scores(results: dict) -> dict[str, list[str]]:
    """Strategy -> the eval splits whose scores of it are optimistic: under --selection-data
    validation the candidates were scored on the first eval split, so OLFT's score on that split
    is the best of several tries on it (the paper's protocol). Empty under --selection-data train."""
    sel, splits = results.get("selection") or {}, results.get("eval_splits") or []
    if sel.get("protocol") != "validation" or not splits or "olft" not in (results.get("strategies") or {}):
        return {}
    return {"olft": [splits[0]]}


def _fmt_score(value: float | None) -> str:
    return "failed" if value is None else f"{100 * value:.1f}"


def continue_command(folder: Path | None) -> str:
    """The shell command that continues a run folder where it stopped (a selection-only folder:
    to tuning its selected layer), from any directory: its own config.json, --out the folder."""
    where = shlex.quote(str(folder.resolve())) if folder is not None else "RUN_FOLDER"
    return f"olft run --config {where}/config.json --out {where}"


def resume_command(folder: Path | None, results: dict) -> str:
    """The command that continues an unfinished folder: `olft select` for one that only selects
    (no strategy named), else `olft run` on its config.json (which names train's layers=... too)."""
    command = continue_command(folder)
    return command.replace("olft run", "olft select", 1) if not results.get("strategy_names") else command


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
    left = f" Not finished: {', '.join(missing)}." if missing else ""
    return ["", f"**UNFINISHED:** {why}{error}. This table shows only the pieces finished by then.{left} "
            f"`{resume_command(folder, results)}` continues the folder, keeping them."]  # fmt: skip


def made_by(results: dict) -> str:
    """The subcommand that made a run folder, from its results.json: `olft train` where every
    strategy it names is explicit layers (`layers=...`, which train names its one), else `olft run`."""
    names = results.get("strategy_names") or list(results.get("strategies") or {})
    return "olft train" if names and all(n.startswith("layers=") for n in names) else "olft run"


def table_md(results: dict, folder: Path | None = None) -> str:
    """Table 1 (scores, chosen layer) and Table 2 (time, parameters) in the paper's layout, then
    the selection. A table with no rows is left out: a selection-only folder (`olft select`) has
    neither, and says instead how to continue it (its run folder `folder`, where known)."""
    task, metric = results["task"], results["metric"]
    strategies, failed = results["strategies"], results.get("failed") or {}
    lines = [f"# {results['model']} on {task} ({results['method']})", *_unfinished_banner(results, folder)]
    if strategies or failed:
        lines += _score_table(results)
        lines += _cost_table(results)
    elif finished_selection(results) and not (results.get("strategy_names") and results.get("status") in UNFINISHED_STATUS):
        lines += ["", f"Selection only (`olft select`): no layer was tuned. `{continue_command(folder)}` "
                  "continues this folder to tuning, keeping this selection."]  # fmt: skip
    sel = results.get("selection")
    if unfinished(sel):
        lines += _unfinished_lines(sel, metric, resume_command(folder, results))
    elif sel:
        sel_cpu = "" if sel.get("cpu_seconds") is None else f", {sel['cpu_seconds'] / 60:.2f} min CPU"
        apart = " (not included in OLFT's train time above)" if "train_seconds" in (strategies.get("olft") or {}) else ""
        lines += [
            "",
            f"Selection ({sel['protocol']}): {plural(len(sel['candidates']), 'candidate')}, {_examples_used(sel)}, "
            f"{sel['seconds'] / 60:.2f} min wall{sel_cpu}{apart}; selected layer {sel['selected_layer']}"
            f"{' by lowest ' + loss_name(sel.get('protocol')) if sel.get('metric') == 'loss' else ''}.",
        ]
        if sel.get("selected_layer") is not None and sel["selected_layer"] == results.get("num_layers", 0) - 1:
            lines.append(FINAL_LAYER_NOTE[0].upper() + FINAL_LAYER_NOTE[1:] + ".")
        lines += _protocol_lines(sel, results)
        lines += _untrained_lines(sel)
        candidate_timing = (results.get("timing") or {}).get("candidates") or {}
        lines += _timing_notes(candidate_timing, "The candidates' times")
        lines += _verdict_lines(sel, metric)
        lines += _retrained_lines(sel)
        lines += _candidate_table(sel, metric, run_marks(candidate_timing))
    return "\n".join(lines) + "\n"


def _unfinished_lines(sel: dict, metric: str, command: str) -> list[str]:
    """An unfinished selection (`unfinished_entry`): that no layer is selected yet, each finished
    candidate's score (the task metric in points after its steps; a failed one says so), and
    `command` (`resume_command`: the banner's) that continues it."""
    scores = "; ".join(f"layer {c['layer']} {_fmt_score(c.get('score'))} ({c.get('steps')} steps)" for c in sel["candidates"])
    return ["", f"Selection unfinished ({sel.get('selector')} selector, {sel.get('protocol')}): no layer is selected yet. "
            f"{plural(len(sel['candidates']), 'candidate')} finished ({metric} x100): {scores}. "
            f"`{command}` continues it, keeping them."]  # fmt: skip


def _examples_used(sel: dict) -> str:
    """What the selection's candidates were fitted and scored on: the fit and scoring sets, or for
    the gradient selector (which scores nothing held out) the training batches it summed."""
    rounds = sel.get("rounds") or [{}]
    if sel.get("selector") == "gradient":
        last = rounds[-1]
        n = last.get("batches")
        used = (f"the gradients of {n} training batch{'' if n == 1 else 'es'} of {last['batch_size']}"
                if last.get("batches") else "the gradients of training batches")  # fmt: skip
        return f"{used} from {sel['train_examples']} training examples (no held-out examples scored)"
    return f"{sel['train_examples']} training / {plural(sel['score_examples'], 'scoring example')} each"


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
    for name, s in {**strategies, **(results.get("failed") or {})}.items():  # a failed strategy's scores read "failed"
        layers = _layers_label(s["layers"], results["num_layers"])
        scores = []
        for split in results["eval_splits"]:
            value = s.get("metrics", {}).get(split, {}).get(metric) if s.get("metrics") else None
            scores.append(_fmt_score(value) + (f" l-{s['layers'][0]}" if name == "olft" and value is not None else "")
                          + _collapsed_mark(s, split) + (" ‡" if split in optimistic.get(name, []) else ""))  # fmt: skip
        lines.append(f"| {name} | {layers} | " + " | ".join(scores) + " |")
    notes = [f"‡ Optimistic: {OPTIMISTIC.format(split=split)}" for split in optimistic.get("olft", [])]
    return lines + _collapsed_notes(strategies, results["eval_splits"]) + (["", *notes] if notes else [])


# Table 1's footnote to an optimistic score, and the selection section's line under --selection-data validation.
OPTIMISTIC = ("--selection-data validation chose OLFT's layer by its score on this same {split} split (the paper's "
              "protocol), so that score is the best of several tries on it, not an unbiased estimate; --selection-data "
              "train keeps {split} out of the choice.")


def _protocol_lines(sel: dict, results: dict) -> list[str]:
    """Under --selection-data validation: which examples scored the candidates, and that OLFT's
    score on them is optimistic. None under --selection-data train."""
    if sel.get("protocol") != "validation":
        return []
    split = (results.get("eval_splits") or ["validation"])[0]
    return [f"Candidates were scored on the {split} split (at most --max-eval-samples of it, drawn with --seed), so "
            f"OLFT's {split} score in Table 1 is optimistic: the same examples chose its layer (the paper's protocol; "
            "--selection-data train keeps them out of the choice)."]


def _untrained_lines(sel: dict) -> list[str]:
    """Under probe-halving, where the probe kept fewer than two layers (--probe-keep 1): that no layer
    was trained, so the choice is the probe's, as the run's warning says. None otherwise."""
    if sel.get("selector") != "probe-halving" or not probe_decided(sel):
        return []
    keep = sel.get("probe_keep") or 0
    return [f"The probe kept {keep} of {plural(len(sel['candidates']), 'candidate')} (--probe-keep {keep}), so no "
            "layer was trained: the choice is the probe's, not a trained candidate's."]


# A proxy selector's score is not the task metric: what each one's score is.
PROXY_LABELS = {"probe": "probe score (-held-out loss x100)", "gradient": "relative gradient norm (x100)"}


def _proxy_name(sel: dict) -> str | None:
    """The proxy that scored some of `sel`'s candidates without training them ("probe",
    "gradient"), or None for a selector that trains every candidate it scores."""
    selector = sel.get("selector")
    return "probe" if selector in ("probe-halving", "auto") else selector if selector in PROXY_LABELS else None


def _proxy_label(sel: dict) -> str:
    """`PROXY_LABELS` of `sel`'s proxy, the probe's loss named as `_loss_label` names it."""
    return PROXY_LABELS[_proxy_name(sel)].replace("held-out loss", _loss_label(sel))


def _loss_label(sel: dict) -> str:
    """The candidates' per-example loss as table.md's columns name it: for the protocol (`loss_name`),
    and on a regression task (the constant predicts the mean: STS-B) what the number is, a squared
    error ('held-out squared error'), not a log loss."""
    if sel.get("baseline_predicts") == "mean":
        return f"{scored_on(sel.get('protocol'))} squared error"
    return loss_name(sel.get("protocol"))


def _proxy_scored(c: dict, sel: dict) -> bool:
    """True when candidate `c` holds its proxy's score (0 steps: never trained), not a trained score."""
    return _proxy_name(sel) is not None and not c.get("steps")


def _collapsed_mark(s: dict, split: str) -> str:
    """A dagger after a score of `split` on which the strategy predicted one class for every example."""
    return " †" if split in (s.get("one_class") or {}) else ""


def collapsed_text(name: str, label: str, split: str) -> str:
    """What a strategy's collapse to one class means, as the run's warning and table.md say it.
    (Not "its score is that class's share": true of accuracy only, not of F1 or MCC.)"""
    return (f"{name} predicts {label!r} for every {split} example: it collapsed to one class, so its score measures "
            "that constant answer, not what the layers learned.")


def _collapsed_notes(strategies: dict, splits: list[str]) -> list[str]:
    """The footnotes to `_collapsed_mark`'s daggers: which class, on which split."""
    notes = [f"† {collapsed_text(name, s['one_class'][split], split)}"
             for name, s in strategies.items() for split in splits if split in (s.get("one_class") or {})]  # fmt: skip
    return ["", *notes] if notes else []


def _verdict_lines(sel: dict, metric: str) -> list[str]:
    """How sure the selection is, from `selection_verdict` (the plot's title says the same). First,
    where no probe beat a constant predictor, that (`no_signal_text`); if the probe then chose the
    layer, no confidence is quoted: the probes' gaps to each other are noise."""
    text, trained = no_signal_text(sel), trained_no_signal_text(sel)
    guess = (text is not None and probe_decided(sel)) or trained is not None
    verdict = selection_verdict(sel)
    lines = [f"No signal: {t}." for t in (text, trained) if t]
    if verdict == "tie":
        return lines + ["Every candidate ranked the same: the selected layer is the tie-break (lowest layer), not a signal."]
    if verdict == "near-tie" and len(sel.get("equivalent") or []) > 1:
        tie, after = tie_text(sel, metric), retrained_words(sel)
        return lines + [f"Layers {', '.join(map(str, sel['equivalent']))} are within noise of each other{' ' + after if after else ''} "
                        f"({sel['selector']} selector): "
                        f"{tie + '; ' if tie else ''}equivalent choices.{_below_winner_words(sel)}"]  # fmt: skip
    if verdict == "near-tie":
        return lines + ["The runner-up is within one binomial standard error of the winner's score (a rough yardstick: this "
                        "selection recorded no paired noise estimate)."]  # fmt: skip
    if sel.get("confidence") is not None and not guess:
        return lines + [f"{sel['selector']} selector: {confidence_words(sel, metric)}."]
    guessed = guessed_tie_text(sel, metric)  # no signal: the tie the loss broke is still told, as a guess
    return lines + ([f"{sel['selector']} selector: {guessed}."] if guessed else [])


def _below_winner_words(sel: dict) -> str:
    """" Layer 5 is not: layer 5's held-out loss is 3.10 standard errors below layer 2's (...)": the
    finalists whose loss is clearly below the winner's (by the equivalence threshold or more, in
    `gaps`), which the 'within noise' sentence would otherwise leave out; '' when there are none."""
    gaps, winner, threshold = sel.get("gaps") or {}, sel.get("selected_layer"), sel.get("equivalence_threshold")
    if threshold is None:
        return ""
    below = sorted((int(k), g) for k, g in gaps.items() if int(k) != winner and g is not None and g <= -threshold)
    if not below:
        return ""
    loss = loss_name(sel.get("protocol"))
    words = "; ".join(f"layer {k}'s {loss} is {-g:.2f} standard errors below layer {winner}'s" for k, g in below)
    names = layer_list([k for k, _ in below])
    return f" {names[0].upper()}{names[1:]} {'is' if len(below) == 1 else 'are'} not: {words} (outside the noise: score and loss disagree)."


def _retrained_lines(sel: dict) -> list[str]:
    """Which layers each adaptive round (--selection-adaptive) retrained, at how many steps, and the
    rule that chose them: their loss within the threshold of the winner's in paired standard errors
    (the round's `retrained` record), and how far the layers left out were. Rounds from before
    olft recorded `retrained` are not described."""
    lines, loss, rounds = [], loss_name(sel.get("protocol")), sel.get("rounds") or []
    for before, now in zip(rounds, rounds[1:], strict=False):
        why = now.get("retrained")
        if not why:
            continue
        gaps = {int(k): v for k, v in why["gaps"].items()}
        out = [f"layer {k}'s was {_gap_words(g)}" for k, g in sorted(gaps.items()) if k not in now["layers"]]
        # `Selection.contenders`: a layer clearly below the winner on loss is retrained too.
        below = [k for k in now["layers"] if gaps.get(k) is not None and gaps[k] <= -why["threshold"]]
        lower = f", or below it ({layer_list(below)}: score and loss disagree)" if below else ""
        lines.append(f"Retrained at {now['steps']} steps (--selection-adaptive): {layer_list(now['layers'])} ({loss} within "
                     f"{why['threshold']:.1f} standard errors of layer {why['winner']}'s{lower} after {before['steps']} steps)"
                     + (f"; {', '.join(out)}" if out else "") + ".")  # fmt: skip
    return ["", *lines] if lines else []


def _gap_words(gap: float | None) -> str:
    """A paired gap (standard errors, positive: the loss above the winner's) in words."""
    if gap is None:
        return "not measured (no per-example losses)"
    return f"{abs(gap):.2f} standard errors {'above' if gap > 0 else 'below'}"


def _candidate_table(sel: dict, metric: str, run_of: dict[str, str] | None = None) -> list[str]:
    """The candidates' scores, held-out losses and seconds, each time marked with the run that
    timed it where `run_of` (`run_marks`, by piece name layer-steps) names more than one.

    A proxy's score is not the task metric, so its column says what it is. When a probe pruned
    the candidates before training the rest (probe-halving), probe scores and trained scores get a
    column each: one column would read -64 (probe) and 58 (accuracy) as one scale.
    """
    cands = sel["candidates"]
    probed = [c for c in cands if _proxy_scored(c, sel)]
    mixed = 0 < len(probed) < len(cands)
    losses = any("loss" in c.get("metrics", {}) for c in cands)
    if mixed:
        head = f"| layer | {_proxy_label(sel)} | {metric} x100 after training (steps) |"
    else:
        head = f"| layer | {_proxy_label(sel) if probed else 'score'} |"
    lines = ["", head + (f" {_loss_label(sel)} |" if losses else "") + " seconds |",
             "|---|---|" + ("---|" if mixed else "") + ("---|" if losses else "") + "---|"]  # fmt: skip
    proxy_scores = _proxy_round_scores(sel) if mixed else {}
    # Halving's early rungs stop sooner: a score after 3 steps must not read as one after 24.
    uneven = len({c.get("steps") for c in cands if not _proxy_scored(c, sel)}) > 1
    for c in cands:
        score = _fmt_score(c["score"])
        if mixed:
            before = proxy_scores.get(c["layer"])
            score = (f"{score} | -" if _proxy_scored(c, sel)
                     else f"{'-' if before is None else _fmt_score(before)} | {score} ({c.get('steps')} steps)")
        elif uneven and c["score"] is not None:
            score = f"{score} ({c.get('steps')} steps)"
        # A pruned layer's loss is the probe's (its score, negated), not a tuned module's: left out.
        loss = None if mixed and _proxy_scored(c, sel) else c.get("metrics", {}).get("loss")
        cell = (" - |" if loss is None else f" {loss:.4f} |") if losses else ""
        share = " *" if _proxy_scored(c, sel) else ""  # not a measurement: `_share_note`
        run = (run_of or {}).get(f"{c['layer']}-{c.get('steps')}", "")
        lines.append(f"| {c['layer']} | {score} |{cell} {c['seconds']:.1f}{share}{run} |")
    return (lines + _share_note(sel, probed) + (_pruning_note(sel) if mixed else []) + _baseline_note(sel)
            + _trained_baseline_note(sel))  # fmt: skip


def _share_note(sel: dict, probed: list[dict]) -> list[str]:
    """The footnote to a proxy-scored layer's seconds: one joint pass scored all of them, and each
    shows its share of that pass's time (the total over the count), not a time of its own."""
    if not probed:
        return []
    proxy = _proxy_name(sel)
    rounds = [r for r in sel.get("rounds") or [] if r.get("stage") == proxy]
    total = f" ({rounds[0]['seconds']:.1f} s)" if rounds and rounds[0].get("seconds") is not None else ""
    n = len(rounds[0].get("layers") or probed) if rounds else len(probed)
    return ["", f"* Per-layer share of one joint {proxy} pass over {plural(n, 'layer')}{total}: the pass's "
            "time divided by the layer count, not a measurement of each layer."]


def _baseline_note(sel: dict) -> list[str]:
    """Which probes beat the constant predictor (`beats_baseline`), where some do and some do not;
    none: `_verdict_lines` says so; all: nothing to mark. The ranking is the probe's either way."""
    beats = sel.get("beats_baseline") or {}
    won = [int(k) for k, v in beats.items() if v]
    lost = [int(k) for k, v in beats.items() if not v]
    if not won:  # none: `_verdict_lines` says so, with the constant's loss
        return []
    by = baseline_words(sel)[2]
    if not lost:
        return ["", f"{_constant_words(sel)}: every candidate's probe beats it{by}."]
    return ["", f"{_constant_words(sel)}: the probe{'s' if len(won) > 1 else ''} of {layer_list(sorted(won))} "
            f"beat{'s' if len(won) == 1 else ''} it{by}, th{'at' if len(lost) == 1 else 'ose'} of {layer_list(sorted(lost))} "
            f"do{'es' if len(lost) == 1 else ''} not (the ranking is the probe's either way)."]  # fmt: skip


def _constant_words(sel: dict) -> str:
    """'Predicting the class frequencies has held-out loss 0.6931': the constant predictor of `sel`
    and its loss on the scoring set, as the notes on probes and on trained finalists open."""
    what, unit, _ = baseline_words(sel)
    return f"Predicting {what} has {scored_on(sel.get('protocol'))} {unit} {sel['baseline_loss']:.4f}"


def _trained_baseline_note(sel: dict) -> list[str]:
    """How the trained finalists' held-out losses stand against the constant predictor's
    (`trained_baseline_gaps`, paired per example), where some beat it; none: `_verdict_lines` says so."""
    gaps = sel.get("trained_baseline_gaps") or {}
    if sel.get("trained_no_signal") is not False or not gaps:
        return []
    loss = loss_name(sel.get("protocol"))
    words = ", ".join(f"layer {k}'s is {_gap_words(None if g is None else -g)} it"
                      for k, g in sorted(gaps.items(), key=lambda kv: int(kv[0])))  # fmt: skip
    return ["", f"{_constant_words(sel)}; the trained finalists' {loss} (paired per example): {words}."]


def _proxy_round_scores(sel: dict) -> dict[int, float]:
    """Layer -> the proxy's own score, from its round (`rounds[0]["scores"]`; results.json's keys
    are strings). Empty for results from before rounds recorded scores."""
    rounds = sel.get("rounds") or []
    if not rounds or rounds[0].get("stage") != _proxy_name(sel):
        return {}
    return {int(k): v for k, v in (rounds[0].get("scores") or {}).items()}


def _pruning_note(sel: dict) -> list[str]:
    """What the proxy did to the layers that went on to training: its ranking, and where older
    results lack the proxy's scores of those layers (later stages replace a layer's numbers in
    `candidates`; since then each round keeps its own), that they are missing."""
    rounds = sel.get("rounds") or []
    if len(rounds) < 2 or rounds[0].get("stage") != _proxy_name(sel):
        return []
    proxy, kept = rounds[0]["stage"], rounds[1]["layers"]
    missing = "" if _proxy_round_scores(sel) else (
        f"; the {proxy}'s scores of those are not recorded (their trained numbers replace them)")
    return ["", f"The {proxy} ranked layers {', '.join(map(str, rounds[0]['ranking']))} (best first) and kept "
            f"{', '.join(map(str, kept))} for training{missing}."]  # fmt: skip


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
    for name, s in strategies.items():
        time_pct = f"{100 * s[key] / full[key]:.1f}" if full.get(key) else "-"
        cpu_min = f"{s['train_cpu_seconds'] / 60:.2f}" if s.get("train_cpu_seconds") else "-"
        p = s["peft_params"]
        param_pct = f"{100 * p / all_params:.2f}" if all_params else "-"
        lines.append(f"| {name} | {s['train_seconds'] / 60:.2f}{run_of.get(name, '')} | {cpu_min} | {time_pct} | {p / 1e6:.4f} | "
                     f"{param_pct} | {_fmt_score(s.get('score'))}{_collapsed_mark(s, results['eval_splits'][0])}"
                     f"{' ‡' if results['eval_splits'][0] in optimistic.get(name, []) else ''} |")  # fmt: skip
    lines += _timing_notes(timing, "Table 2's times")
    return lines + _whole_run(results.get("selection"), strategies.get("olft"), full, cpu, results.get("train_examples"))


def _whole_run(sel: dict | None, olft: dict | None, full: dict, cpu: bool, train_examples: int | None = None) -> list[str]:
    """OLFT's whole run (selection plus its training) as % of all-layer training, on Table 2's
    basis; on wall time when Table 2's is CPU but the selection recorded no CPU time. Where
    selection took longer than OLFT's training, a line says that its cost is set by the selection
    budget, not by the training set (a small --max-train-samples makes it look large)."""
    if not sel or not olft or not full.get("train_seconds"):
        return []
    why = "; this selection recorded no CPU time" if cpu and sel.get("cpu_seconds") is None else ""
    cpu = cpu and not why
    sel_s, train_s, full_s = (sel["cpu_seconds"], olft["train_cpu_seconds"], full["train_cpu_seconds"]) if cpu else (
        sel["seconds"], olft["train_seconds"], full["train_seconds"])  # fmt: skip
    lines = ["", f"OLFT's whole run (selection {sel_s / 60:.2f} min + its training {train_s / 60:.2f} min, "
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
    """Piece name -> ' (first run)', the label of the run that timed it, for a table's time cell;
    empty unless the shown times come from more than one run (one run needs no mark)."""
    runs = timing.get("runs") or []
    return {n: f" ({r['label']})" for r in runs for n in r["pieces"]} if len(runs) > 1 else {}


def _run_words(r: dict) -> str:
    """'first run: process 12 on h, cpu, 1 torch thread, 1 process, started ...' (a `compare_timing` run)."""
    threads = r.get("torch_threads")
    counts = ("" if threads is None else f", {plural(threads, 'torch thread')}") + (
        "" if r.get("world_size") is None else f", {r['world_size']} process{'' if r['world_size'] == 1 else 'es'}")
    return f"{r['label']}: process {r['pid']} on {r['host']}, {r.get('device')}{counts}, started {r['started']}"


def _timing_notes(timing: dict, what: str) -> list[str]:
    """Lines flagging times that do not compare (see `runfolder.compare_timing`); none when they do,
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
    if timing["resumed_mid_training"]:
        one = len(timing["resumed_mid_training"]) == 1
        notes.append(f"{', '.join(timing['resumed_mid_training'])} resumed from a checkpoint, so {'its' if one else 'their'} "
                     "time counts only the steps after it")  # fmt: skip
    return ["", f"**Timings do not compare:** {what} are not from one uninterrupted run: " + "; ".join(notes)
            + ". Rerun in one process (another --out, or --overwrite) for times that compare."]  # fmt: skip


def _layers_label(layers: list[int], n: int) -> str:
    if len(layers) == n and n > 1:
        return f"all ({n})"
    return ",".join(map(str, layers))


def binomial_se(score: float, n: int) -> float:
    """Standard error of a proportion `score` measured on `n` examples: sqrt(p (1 - p) / n).

    Exact for accuracy; for F1 the usual rough yardstick. Meaningless for MCC and correlations
    (p is clipped to [0, 1]): the plot draws no error bars for those, and the near-tie rule
    below is only the fallback for results from before olft recorded `equivalent`.
    """
    p = min(max(score, 0.0), 1.0)
    return (p * (1 - p) / n) ** 0.5 if n > 0 else 0.0


def selection_verdict(sel: dict) -> str | None:
    """'tie' when every candidate ranked the same, 'near-tie' when the runner-up is within noise
    of the winner, else None: what table.md, the console and the plot's title all say.

    The selection's own record decides: `flat`, and `equivalent` (the winner and the layers
    within `equivalence_threshold` standard errors of it, paired on per-example held-out losses).
    Only results from before olft recorded `equivalent` fall back to a rough rule: the runner-up
    within one binomial standard error of the winner's score.
    """
    if sel.get("flat"):
        return "tie"
    if "equivalent" in sel:
        return "near-tie" if len(sel["equivalent"] or []) > 1 else None
    scores = sorted((c["score"] for c in sel["candidates"] if c["score"] is not None), reverse=True)
    if len(scores) > 1 and len(set(scores)) == 1:
        return "tie"
    if len(scores) > 1 and scores[0] - scores[1] <= binomial_se(scores[0], sel.get("score_examples") or 0):
        return "near-tie"
    return None
