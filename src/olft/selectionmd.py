"""table.md's selection section: the candidates' table, its notes, and how sure the choice is.

What each candidate scored (a proxy's score in a column of its own, each time marked with the
run that timed it), what a probe did before training (`_pruning_note`), how the candidates stand
against a constant predictor, which layers --selection-adaptive retrained, and the verdict
(`selection_verdict`: tie, near-tie or a clear choice, which the plot's title says too), in the
words of `olft.verdicts`. `olft.report.table_md` puts these lines after Table 1 and Table 2.
Nothing here imports torch.
"""

from __future__ import annotations

from olft.select import probe_decided
from olft.verdicts import (
    baseline_words,
    candidate_score,
    confidence_words,
    flat_choice_words,
    floor_tied,
    fmt_score,
    guessed_tie_text,
    layer_list,
    loss_name,
    no_signal_text,
    plural,
    retrained_words,
    scored_on,
    tie_text,
    trained_no_signal_text,
    undefined_note,
    unmeasured_caveat,
)


def unfinished_lines(sel: dict, metric: str, command: str, ended: bool = False, python: str = "") -> list[str]:
    """An unfinished selection (`select.unfinished_entry`): that no layer is selected yet, the probe's
    scores where its stage finished (marked as the probe's, with the layers it passed on to training),
    each finished trained candidate's score (the task metric in points after its steps), each failed
    one's error as results.json records it (which names its step and fix), and `command`
    (`report.resume_command`: the banner's) that continues it, and `python` (`report.python_form`: the
    Python call that does the same, for a folder made through the Python API). Where its run has `ended` and every
    trained candidate failed, the selection failed: no continue advice then, since continuing keeps
    the failures (and a divergence repeats at the same settings)."""
    probed = [c for c in sel["candidates"] if proxy_scored(c, sel)]
    # One entry per layer: a halving rung or an --selection-adaptive retraining adds a longer piece of a layer
    # already trained, so the layer counts once, with its latest round (as the finished table lists it).
    trained = latest_rounds([c for c in sel["candidates"] if not proxy_scored(c, sel)])
    failed = [rounds[-1] for rounds in trained if rounds[-1].get("score") is None]
    errors = [f"- layer {c['layer']}: {c.get('error') or 'no error recorded'}" for c in failed]
    if ended and trained and len(failed) == len(trained):
        return ["", f"Selection failed ({sel.get('selector')} selector, {sel.get('protocol')}): every candidate failed to "
                "train, so no layer was selected:", "", *errors, "", REPEATS]  # fmt: skip
    scores = "; ".join(map(_trained_words, trained))
    latest = ", each layer's latest round" if any(len(rounds) > 1 for rounds in trained) else ""
    done = f"{plural(len(trained), 'candidate')} finished ({metric} x100{latest}): {scores}. "
    if probed:
        passed = (sel.get("probe") or {}).get("finalists")
        done = (probe_text(sel) + ("; " if passed else ". ")
                + (f"{plural(len(trained), 'trained candidate')} finished ({metric} x100{latest}): {scores}. " if trained
                   else "no trained candidate finished yet. " if passed else ""))  # fmt: skip
    lines = ["", f"Selection unfinished ({sel.get('selector')} selector, {sel.get('protocol')}): no layer is selected yet. "
             f"{done}`{command}` continues it, keeping them{'; ' + python if python else ''}."]  # fmt: skip
    return lines + (["", "Failed:", "", *errors, "", REPEATS] if failed else [])


def probe_text(sel: dict) -> str:
    """'The probe scored 4 candidates (probe score (...), probe scores, not the task metric): layer 0
    -50.0; layer 1 -51.0. It passed layers 0, 1 on to training' for an unfinished selection whose
    probe stage finished (`select.unfinished_entry` with its probe piece); '' without one. table.md
    (`unfinished_lines`) and `olft evaluate` say it in these words."""
    probed = [c for c in sel["candidates"] if proxy_scored(c, sel)]
    if not probed:
        return ""
    passed = (sel.get("probe") or {}).get("finalists")
    return (f"The probe scored {plural(len(probed), 'candidate')} ({proxy_label(sel)}, probe scores, not the task metric): "
            + "; ".join(f"layer {c['layer']} {fmt_score(c.get('score'))}" for c in probed)
            + (f". It passed {layer_list(passed)} on to training" if passed else ""))


def latest_rounds(trained: list[dict]) -> list[list[dict]]:
    """Each layer's trained pieces, by layer, each layer's rounds in order of steps (its latest last)."""
    by_layer: dict[int, list[dict]] = {}
    for c in sorted(trained, key=lambda c: (c.get("steps") or 0, c["layer"])):
        by_layer.setdefault(c["layer"], []).append(c)
    return [by_layer[layer] for layer in sorted(by_layer)]


def _trained_words(rounds: list[dict]) -> str:
    """'layer 2 55.0 (8 steps; 50.0 at 4 steps)': a layer's latest round, then its earlier ones.
    A failed round's budget is not how far it got: its error says the step it failed at."""
    last = rounds[-1]
    earlier = "; ".join(f"{candidate_score(c)} at {c.get('steps')} steps" for c in rounds[:-1])
    if last.get("score") is None:
        return f"layer {last['layer']} failed" + (f" ({earlier})" if earlier else "")
    return f"layer {last['layer']} {candidate_score(last)} ({last.get('steps')} steps" + (f"; {earlier}" if earlier else "") + ")"


# After a failed candidate's error: why continuing the folder does not help. A candidate fails only
# on a non-finite loss (`stages` records `NonFiniteLoss`), which the same settings reproduce.
REPEATS = ("A failed candidate fails the same way again at these settings, and continuing this folder keeps it as "
           "failed: fix what its error says (a lower learning rate), then rerun in another --out or with --overwrite.")


def examples_used(sel: dict) -> str:
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


def protocol_lines(sel: dict, results: dict) -> list[str]:
    """Under --selection-data validation: which examples scored the candidates, and that OLFT's
    score on them is optimistic. None under --selection-data train."""
    if sel.get("protocol") != "validation":
        return []
    split = (results.get("eval_splits") or ["validation"])[0]
    return [f"Candidates were scored on the {split} split (at most --max-eval-samples of it, drawn with --seed), so "
            f"OLFT's {split} score in Table 1 is optimistic: the same examples chose its layer (the paper's protocol; "
            "--selection-data train keeps them out of the choice)."]


def untrained_lines(sel: dict) -> list[str]:
    """Under probe-halving, where the probe kept fewer than two layers (--probe-keep 1): that no layer
    was trained, so the choice is the probe's, as the run's warning says. None otherwise."""
    if sel.get("selector") != "probe-halving" or not probe_decided(sel):
        return []
    keep = sel.get("probe_keep") or 0
    return [f"The probe kept {keep} of {plural(len(sel['candidates']), 'candidate')} (--probe-keep {keep}), so no "
            "layer was trained: the choice is the probe's, not a trained candidate's."]


# A proxy selector's score is not the task metric: what each one's score is.
PROXY_LABELS = {"probe": "probe score (-held-out loss x100)", "gradient": "relative gradient norm (x100)"}


def proxy_name(sel: dict) -> str | None:
    """The proxy that scored some of `sel`'s candidates without training them ("probe",
    "gradient"), or None for a selector that trains every candidate it scores."""
    selector = sel.get("selector")
    return "probe" if selector in ("probe-halving", "auto") else selector if selector in PROXY_LABELS else None


def proxy_label(sel: dict) -> str:
    """`PROXY_LABELS` of `sel`'s proxy, the probe's loss named as `_loss_label` names it."""
    return PROXY_LABELS[proxy_name(sel)].replace("held-out loss", _loss_label(sel))


def _loss_label(sel: dict) -> str:
    """The candidates' per-example loss as table.md's columns name it: for the protocol (`loss_name`),
    and on a regression task (the constant predicts the mean: STS-B) what the number is, a squared
    error ('held-out squared error'), not a log loss."""
    if sel.get("baseline_predicts") == "mean":
        return f"{scored_on(sel.get('protocol'))} squared error"
    return loss_name(sel.get("protocol"))


def proxy_scored(c: dict, sel: dict) -> bool:
    """True when candidate `c` holds its proxy's score (0 steps: never trained), not a trained score."""
    return proxy_name(sel) is not None and not c.get("steps")


def verdict_lines(sel: dict, metric: str) -> list[str]:
    """How sure the selection is, from `selection_verdict` (the plot's title says the same). First,
    where no probe beat a constant predictor, that (`no_signal_text`); if the probe then chose the
    layer, no confidence is quoted: the probes' gaps to each other are noise."""
    text, trained = no_signal_text(sel), trained_no_signal_text(sel)
    guess = (text is not None and probe_decided(sel)) or trained is not None
    verdict = selection_verdict(sel)
    lines = [f"No signal: {t}." for t in (text, trained) if t]
    unmeasured = unmeasured_caveat(sel)
    if unmeasured and not lines:
        lines.append(f"{_sentence(unmeasured[0].split(':')[0])}: {unmeasured[1]}.")
    if verdict == "tie":
        return lines + [f"Every candidate ranked the same: the selected layer was chosen by {flat_choice_words(sel)}, not a signal."]
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


def _sentence(text: str) -> str:
    """`text` with its first letter upper-case."""
    return text[:1].upper() + text[1:]


def _below_winner_words(sel: dict) -> str:
    """" Layer 5 is not: layer 5's held-out loss is 3.10 standard errors below layer 2's (...)": the
    finalists whose loss is clearly below the winner's (by the equivalence threshold or more, in
    `gaps`), which the 'within noise' sentence would otherwise leave out; '' when there are none."""
    gaps, winner, threshold = sel.get("gaps") or {}, sel.get("selected_layer"), sel.get("equivalence_threshold")
    if threshold is None:
        return ""
    tied = floor_tied(sel)  # equivalent however many standard errors below: within the loss floor
    below = sorted((int(k), g) for k, g in gaps.items()
                   if int(k) != winner and int(k) not in tied and g is not None and g <= -threshold)  # fmt: skip
    if not below:
        return ""
    loss = loss_name(sel.get("protocol"))
    words = "; ".join(f"layer {k}'s {loss} is {-g:.2f} standard errors below layer {winner}'s" for k, g in below)
    names = layer_list([k for k, _ in below])
    return f" {names[0].upper()}{names[1:]} {'is' if len(below) == 1 else 'are'} not: {words} (outside the noise: score and loss disagree)."


def retrained_lines(sel: dict) -> list[str]:
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
        floored = [k for k in why.get("floor_tied") or [] if k in now["layers"]]  # `Selection.tied_in_practice`
        below = [k for k in now["layers"] if gaps.get(k) is not None and gaps[k] <= -why["threshold"] and k not in floored]
        lower = f", or below it ({layer_list(below)}: score and loss disagree)" if below else ""
        floor = (f", or within {why['loss_floor']:.4f} of its mean ({layer_list(floored)}: nearly identical predictions)"
                 if floored else "")  # fmt: skip
        lines.append(f"Retrained at {now['steps']} steps (--selection-adaptive): {layer_list(now['layers'])} ({loss} within "
                     f"{why['threshold']:.1f} standard errors of layer {why['winner']}'s{lower}{floor} after {before['steps']} "
                     "steps)" + (f"; {', '.join(out)}" if out else "") + ".")  # fmt: skip
    return ["", *lines] if lines else []


def _gap_words(gap: float | None) -> str:
    """A paired gap (standard errors, positive: the loss above the winner's) in words."""
    if gap is None:
        return "not measured (no per-example losses)"
    return f"{abs(gap):.2f} standard errors {'above' if gap > 0 else 'below'}"


def candidate_table(sel: dict, metric: str, run_of: dict[str, str] | None = None) -> list[str]:
    """The candidates' scores, held-out losses and seconds, each time marked with the run that
    timed it where `run_of` (`report.run_marks`, by piece name layer-steps) names more than one.

    A proxy's score is not the task metric, so its column says what it is. When a probe pruned
    the candidates before training the rest (probe-halving), probe scores and trained scores get a
    column each: one column would read -64 (probe) and 58 (accuracy) as one scale.
    """
    cands = sel["candidates"]
    probed = [c for c in cands if proxy_scored(c, sel)]
    mixed = 0 < len(probed) < len(cands)
    losses = any("loss" in c.get("metrics", {}) for c in cands)
    if mixed:
        head = f"| layer | {proxy_label(sel)} | {metric} x100 after training (steps) |"
    else:
        head = f"| layer | {proxy_label(sel) if probed else 'score'} |"
    lines = ["", head + (f" {_loss_label(sel)} |" if losses else "") + " seconds |",
             "|---|---|" + ("---|" if mixed else "") + ("---|" if losses else "") + "---|"]  # fmt: skip
    proxy_scores = proxy_round_scores(sel) if mixed else {}
    # Halving's early rungs stop sooner: a score after 3 steps must not read as one after 24.
    uneven = len({c.get("steps") for c in cands if not proxy_scored(c, sel)}) > 1
    for c in cands:
        score = candidate_score(c)
        if mixed:
            before = proxy_scores.get(c["layer"])
            score = (f"{score} | -" if proxy_scored(c, sel)
                     else f"{'-' if before is None else fmt_score(before)} | {score} ({c.get('steps')} steps)")
        elif uneven and c["score"] is not None:
            score = f"{score} ({c.get('steps')} steps)"
        # A pruned layer's loss is the probe's (its score, negated), not a tuned module's: left out.
        loss = None if mixed and proxy_scored(c, sel) else c.get("metrics", {}).get("loss")
        cell = (" - |" if loss is None else f" {loss:.4f} |") if losses else ""
        share = " *" if proxy_scored(c, sel) else ""  # not a measurement: `_share_note`
        run = (run_of or {}).get(f"{c['layer']}-{c.get('steps')}", "")
        lines.append(f"| {c['layer']} | {score} |{cell} {c['seconds']:.1f}{share}{run} |")
    return (lines + _share_note(sel, probed) + (_pruning_note(sel) if mixed else []) + _baseline_note(sel)
            + _trained_baseline_note(sel) + undefined_note(sel, metric))  # fmt: skip


def _share_note(sel: dict, probed: list[dict]) -> list[str]:
    """The footnote to a proxy-scored layer's seconds: one joint pass scored all of them, and each
    shows its share of that pass's time (the total over the count), not a time of its own."""
    if not probed:
        return []
    proxy = proxy_name(sel)
    rounds = [r for r in sel.get("rounds") or [] if r.get("stage") == proxy]
    total = f" ({rounds[0]['seconds']:.1f} s)" if rounds and rounds[0].get("seconds") is not None else ""
    n = len(rounds[0].get("layers") or probed) if rounds else len(probed)
    return ["", f"* Per-layer share of one joint {proxy} pass over {plural(n, 'layer')}{total}: the pass's "
            "time divided by the layer count, not a measurement of each layer."]


def _baseline_note(sel: dict) -> list[str]:
    """Which probes beat the constant predictor (`beats_baseline`), where some do and some do not;
    none: `verdict_lines` says so; all: nothing to mark. The ranking is the probe's either way."""
    beats = sel.get("beats_baseline") or {}
    won = [int(k) for k, v in beats.items() if v]
    lost = [int(k) for k, v in beats.items() if not v]
    if not won:  # none: `verdict_lines` says so, with the constant's loss
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
    (`trained_baseline_gaps`, paired per example), where some beat it; none: `verdict_lines` says so."""
    gaps = sel.get("trained_baseline_gaps") or {}
    if sel.get("trained_no_signal") is not False or not gaps:
        return []
    loss = loss_name(sel.get("protocol"))
    words = ", ".join(f"layer {k}'s is {_gap_words(None if g is None else -g)} it"
                      for k, g in sorted(gaps.items(), key=lambda kv: int(kv[0])))  # fmt: skip
    return ["", f"{_constant_words(sel)}; the trained finalists' {loss} (paired per example): {words}."]


def proxy_round_scores(sel: dict) -> dict[int, float]:
    """Layer -> the proxy's own score, from its round (`rounds[0]["scores"]`; results.json's keys
    are strings). Empty for results from before rounds recorded scores."""
    rounds = sel.get("rounds") or []
    if not rounds or rounds[0].get("stage") != proxy_name(sel):
        return {}
    return {int(k): v for k, v in (rounds[0].get("scores") or {}).items()}


def _pruning_note(sel: dict) -> list[str]:
    """What the proxy did to the layers that went on to training: its ranking, and where older
    results lack the proxy's scores of those layers (later stages replace a layer's numbers in
    `candidates`; since then each round keeps its own), that they are missing."""
    rounds = sel.get("rounds") or []
    if len(rounds) < 2 or rounds[0].get("stage") != proxy_name(sel):
        return []
    proxy, kept = rounds[0]["stage"], rounds[1]["layers"]
    missing = "" if proxy_round_scores(sel) else (
        f"; the {proxy}'s scores of those are not recorded (their trained numbers replace them)")
    return ["", f"The {proxy} ranked layers {', '.join(map(str, rounds[0]['ranking']))} (best first) and kept "
            f"{', '.join(map(str, kept))} for training{missing}."]  # fmt: skip


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
