"""What a report says about a selection, in words: how sure it is, ties, no signal, and the fix.

Each function reads a selection as results.json holds it (`Selection.to_dict`), so the run's
warnings, table.md and the plot's title say the same thing about the same record. The numbers
behind the words (`confidence`, `equivalent`, `no_signal`, ...) are `olft.select`'s. Every
report line counts and scores with the two helpers at the end (`plural`, `fmt_score`).
"""

from __future__ import annotations

from olft.select import probe_decided


def scored_on(protocol: str | None) -> str:
    """What the examples that scored the candidates are, in words: under --selection-data
    validation the validation split (the split the final scores are reported on), else
    held-out training examples. `protocol` is `Selection.protocol`."""
    return "validation" if protocol == "validation" else "held-out"


def loss_name(protocol: str | None) -> str:
    """The name of the selection's per-candidate loss under `protocol`: 'validation loss' or
    'held-out loss' (`scored_on`), in every verdict, warning and column that quotes it."""
    return f"{scored_on(protocol)} loss"


def confidence_text(confidence: float | None, loss: str = "held-out loss") -> str:
    """`Selection.confidence` in words, its loss named `loss` (`loss_name` of the protocol).
    Negative: the runner-up has the lower loss though the winner scored higher (trained
    candidates rank by score, the loss only breaks ties)."""
    if confidence is None:
        return "one finalist"
    if confidence < 0:
        return f"the runner-up has the lower {loss}, by {-confidence:.1f} standard errors: score and loss disagree"
    return f"the winner's {loss} is {confidence:.1f} standard errors below the runner-up's"


def confidence_words(sel: dict, metric: str) -> str:
    """`confidence_text` of `sel` (a `Selection.to_dict`), with what the number alone hides. Where
    the runner-up shares the winner's score (`metric`, the task's headline metric, names it), the
    held-out loss decided, and every layer on that score is named, as `tie_text` names them for
    equivalent layers: "layers 2, 3 tie on accuracy (69.8); layer 3's held-out loss is 3.7 standard
    errors below layer 2's". Where --selection-adaptive retrained, the gap is that last round's, and
    it says so ("after retraining at 20 steps, ..."), not the first round's that chose whom to retrain."""
    confidence, loss, ranking = sel.get("confidence"), loss_name(sel.get("protocol")), sel.get("ranking") or []
    tie = tie_break_text(sel, metric)
    if confidence is not None and confidence >= 0 and tie:
        text = tie
    elif confidence is None and len(ranking) > 1:  # a proxy without per-example losses: nothing measured the gap
        who = "gradient score" if sel.get("selector") == "gradient" else f"{sel.get('selector')} score"
        return f"ranked by {who}; the gap to the runner-up is not measured (no per-example {loss}es)"
    else:
        text = confidence_text(confidence, loss)
    return f"{retrained_words(sel)}, {text}" if confidence is not None and retrained_words(sel) else text


def tie_break_text(sel: dict, metric: str) -> str | None:
    """Where the runner-up of `sel` (a `Selection.to_dict`) shares the winner's score (`metric`, the
    task's headline metric, names it) and the held-out loss broke that tie, every layer on that score
    and the loss gap from `gaps`: "layers 2, 3 tie on accuracy (69.8); layer 3's held-out loss is 3.7
    standard errors below layer 2's". Measured even where no confidence is quoted (no signal: the
    choice is then still a guess, which the caller says). None otherwise."""
    ranking = sel.get("ranking") or []
    if len(ranking) < 2:
        return None
    winner, runner = ranking[0], ranking[1]
    level, gap = score_tie(sel, ranking), (sel.get("gaps") or {}).get(str(runner))
    if gap is None or gap < 0 or runner not in level:
        return None
    score = candidate_score(next(c for c in reversed(sel["candidates"]) if c["layer"] == winner))
    return (f"layers {', '.join(map(str, level))} tie on {metric} ({score}); layer {winner}'s "
            f"{loss_name(sel.get('protocol'))} is {gap:.1f} standard errors below layer {runner}'s"
            + (", the next lowest" if len(level) > 2 else ""))


def flat_choice_words(sel: dict) -> str:
    """How the layer of a flat selection (`Selection.flat`: every finalist ranked the same) was chosen:
    "the tie-break (lowest layer)" where it is the lowest, else (held-out losses within the
    `loss_floor` count as tied, but the ranking still takes the lowest loss) "a held-out loss
    difference under the loss floor (0.0007), no real difference: still a tie"."""
    ranking = sel.get("ranking") or []
    if not ranking or sel.get("selected_layer", ranking[0]) == min(ranking):
        return "the tie-break (lowest layer)"
    floor = sel.get("loss_floor")
    under = f"the loss floor ({floor:.4g})" if floor is not None else "the loss floor"
    return f"a {loss_name(sel.get('protocol'))} difference under {under}, no real difference: still a tie"


def guessed_tie_text(sel: dict, metric: str) -> str | None:
    """`tie_break_text` where the selection found no signal (its choice a guess, so no confidence is
    quoted), with that caveat: "...; layer 3's held-out loss is 2.5 standard errors below layer 2's,
    but with no signal the choice is still a guess". None where it found a signal or no tie was broken."""
    tie = tie_break_text(sel, metric)
    if not tie or not (sel.get("trained_no_signal") or (sel.get("no_signal") and probe_decided(sel))):
        return None
    after = retrained_words(sel)
    return f"{after + ', ' if after else ''}{tie}, but with no signal the choice is still a guess"


def retrained_words(sel: dict) -> str:
    """'after retraining at 20 steps' when the last round of `sel` was an --selection-adaptive retraining
    (its gaps, `confidence` and `equivalent` are that round's), else ''."""
    last = (sel.get("rounds") or [{}])[-1]
    return f"after retraining at {last['steps']} steps" if last.get("retrained") else ""


def score_tie(sel: dict, layers: list[int]) -> list[int]:
    """The layers of `layers` (the winner among them) whose score equals the winner's, sorted, where
    trained candidates were ranked by score so the held-out loss broke that tie; [] otherwise: ranked
    by loss, or by a proxy's own number, no task metric decided."""
    winner = sel.get("selected_layer")
    last = {c["layer"]: c.get("score") for c in sel.get("candidates") or []}  # a later round's entry overrides
    score = last.get(winner)
    level = sorted(layer for layer in {winner, *layers} if score is not None and last.get(layer) == score)
    return level if _ranked_by_score(sel) and len(level) > 1 else []


def _ranked_by_score(sel: dict) -> bool:
    """True when trained candidates of `sel` were ranked by their score (the task metric), so the
    held-out loss only broke ties; False when ranked by loss, or by a proxy's own number."""
    return sel.get("metric", "score") == "score" and (sel.get("rounds") or [{}])[-1].get("stage", "train") == "train"


def baseline_words(sel: dict) -> tuple[str, str, str]:
    """(what the constant baseline of `sel` predicts, its held-out loss's name, the margin a probe
    must beat it by: `Selection.beats_baseline`) in words. The baseline is the stronger of the fit
    set's class frequencies and even odds ("uniform") on classification, the fit set's mean on
    regression (`olft.proxies.stronger_constant`)."""
    predicts = sel.get("baseline_predicts")
    what, unit = {"mean": ("the fit set's mean", "squared error"),
                  "uniform": ("even odds for every class", "loss")}.get(predicts, ("the class frequencies", "loss"))  # fmt: skip
    by = f" by {sel['equivalence_threshold']:.1f} standard errors or more" if sel.get("equivalence_threshold") else ""
    if sel.get("loss_floor"):  # `Selection.loss_floor`: a drop too small to matter is none
        by += f"{' and' if by else ' by'} {sel['loss_floor']:.4f} or more in mean {unit}"
    return what, unit, by


def no_signal_text(sel: dict) -> str | None:
    """What `no_signal` in `sel` (a `Selection.to_dict`) means, with the fix, as the run's warning
    and table.md say it; None when some probe beat the constant baseline, or no probe ran."""
    if not sel.get("no_signal"):
        return None
    what, unit, by = baseline_words(sel)
    if probe_decided(sel):
        guess, fix = "so the choice is a guess", "--selector exhaustive"
    else:
        kept = (sel.get("rounds") or [{}, {}])[1].get("layers") or []
        guess = f"so its pick of layers {', '.join(map(str, kept))} for training is a guess"
        fix = "--selector halving (it trains every candidate)"
    where = scored_on(sel.get("protocol"))
    return (f"no candidate's probe beats predicting {what} ({where} {unit} {sel['baseline_loss']:.3f}){by}: the probe "
            f"found no signal at this budget, {guess}; use {_more_fit_examples(sel, 'the probe')} or {fix}")


def _more_fit_examples(sel: dict, who: str) -> str:
    """The advice for a bigger fit set, naming the setting that limits it: --selection-train-samples,
    or the training split itself (after any --max-train-samples) when that left fewer examples."""
    n, asked = sel.get("train_examples"), sel.get("requested_train_examples")
    if n and asked and n < asked:  # the training split capped the fit set: only more training data lifts it
        return (f"more training examples (the training split, after any --max-train-samples, left {who} {n} fit "
                f"examples of the {asked} --selection-train-samples asks for)")
    return "more --selection-train-samples" + (f" (now {n})" if n else "")


def _more_score_examples(sel: dict) -> str:
    """The advice for a bigger scoring set under --selection-data train, naming the setting that
    limits it: --selection-eval-samples, or the training split itself (after any --max-train-samples)
    when that left fewer examples, where more --selection-eval-samples would only shrink the fit set."""
    n, asked = sel.get("score_examples"), sel.get("requested_score_examples")
    if n and asked and n < asked:  # the training split capped the scoring set too (both shrunk in proportion)
        return (f"a larger --max-train-samples, if set (the training split left the candidates {n} scoring examples of "
                f"the {asked} --selection-eval-samples asks for; more --selection-eval-samples would only shrink the fit set)")
    return "more --selection-eval-samples" + (f" (now {n})" if n else "")


def _short_of_full_budget(sel: dict) -> bool:
    """True when some candidate of `sel` (a `Selection.to_dict`) trained fewer steps than the
    finalists' full budget (a short halving rung) or not at all (pruned by a probe): then
    --selector exhaustive gives it more. Halving over 2 candidates is one full rung, exhaustive already."""
    rounds = sel.get("rounds") or []
    trained = [r for r in rounds if r.get("stage", "train") == "train" and not r.get("retrained")]
    if not trained:
        return False
    full = max(r.get("steps") or 0 for r in trained)
    every = {layer for r in rounds for layer in r.get("layers") or []} | {c["layer"] for c in sel.get("candidates") or []}
    at_full = {layer for r in trained if (r.get("steps") or 0) >= full for layer in r.get("layers") or []}
    return bool(every - at_full)


def trained_no_signal_text(sel: dict) -> str | None:
    """What `trained_no_signal` in `sel` (a `Selection.to_dict`) means, with the settings to raise,
    as the run's warning and table.md say it; where every finalist's loss is far above the constant's
    (`diverged`), that training diverged, and a lower rate: --lr, or olft's --strategy-lr entry where
    that set the candidates' rate (the record's `rate_from`). None when some trained finalist beat
    the constant predictor, or nothing trained chose."""
    if not sel.get("trained_no_signal"):
        return None
    what, unit, by = baseline_words(sel)
    last = (sel.get("rounds") or [{}])[-1]
    layers, steps = last.get("layers") or [], last.get("steps")
    where = scored_on(sel.get("protocol"))
    if diverged(sel):
        losses = finalist_losses(sel)
        lower = ("use a lower --lr (the candidates train at olft's rate)" if sel.get("rate_from") is None else
                 f"lower {sel['rate_from']}'s rate in --strategy-lr (the candidates train at it, not at --lr)")
        return (f"every trained candidate's {where} {unit} ({', '.join(f'layer {k} {v:.4g}' for k, v in sorted(losses.items()))}) "
                f"is over {DIVERGED_LOSS_RATIO:g} times that of predicting {what} ({sel['baseline_loss']:.3f}): training "
                f"diverged (confidently wrong answers, not too little data or too few steps), so the choice among "
                f"{layer_list(sorted(losses))} is a guess; {lower}")
    fix = f"more --selection-steps (the finalists trained {steps} steps), {_more_fit_examples(sel, 'the candidates')}"
    fix += f" or {_more_score_examples(sel)}" if sel.get("protocol") != "validation" else ""
    fix += ", or --selector exhaustive (every candidate at the full budget)" if _short_of_full_budget(sel) else ""
    return (f"no trained candidate's {where} loss beats predicting {what} ({where} {unit} {sel['baseline_loss']:.3f}){by}, "
            f"paired per example{_one_class_words(sel, layers)}: {layer_list(layers)} found no signal at this budget, so the "
            f"choice among them is a guess; use {fix}")


def _one_class_words(sel: dict, layers: list[int]) -> str:
    """' (layers 4, 5 predict 'negative' for every scoring example: a constant answer, no signal
    whatever its loss)': the finalists among `layers` that collapsed to one class
    (`Candidate.one_class`), which count as no signal even where their loss beats the constant's;
    '' when none did."""
    last = {c["layer"]: c.get("one_class") for c in sel.get("candidates") or []}
    by_class: dict[str, list[int]] = {}
    for layer in layers:
        if last.get(layer) is not None:
            by_class.setdefault(last[layer], []).append(layer)
    words = [f"{layer_list(ks)} predict{'s' if len(ks) == 1 else ''} {cls!r} for every scoring example"
             for cls, ks in by_class.items()]  # fmt: skip
    return f" ({'; '.join(words)}: a constant answer, no signal whatever its loss)" if words else ""


# A trained candidate whose mean held-out loss is this many times the constant predictor's diverged:
# the constant's is ln 2 = 0.69 on a balanced binary task, 10x that is 6.9 nats, a mean probability of
# about 0.001 on the right class. An untrained head starts near the constant's loss and a few steps at a
# workable rate stay near it (too little data: "no signal"); only a rate that blew the weights up lands
# that far above it (or, on a regression task, predictions over 3 standard deviations off on average).
DIVERGED_LOSS_RATIO = 10.0


def finalist_losses(sel: dict) -> dict[int, float]:
    """Layer -> the mean held-out loss of each trained finalist of `sel` (a `Selection.to_dict`),
    its last round's (a later round's entry overrides); layers without a loss are left out."""
    last = {c["layer"]: (c.get("metrics") or {}).get("loss") for c in sel.get("candidates") or []}
    finalists = (sel.get("rounds") or [{}])[-1].get("layers") or list(last)
    return {k: last[k] for k in finalists if last.get(k) is not None}


def diverged(sel: dict) -> bool:
    """True when every trained finalist's mean held-out loss (`finalist_losses`) is over
    `DIVERGED_LOSS_RATIO` times the constant predictor's (`baseline_loss`): the rule that tells a
    learning rate too high (lower --lr) from a budget too small (more steps or data)."""
    losses, baseline = finalist_losses(sel), sel.get("baseline_loss")
    return bool(losses) and baseline is not None and baseline > 0 and all(
        v > DIVERGED_LOSS_RATIO * baseline for v in losses.values())


def unmeasured_caveat(sel: dict) -> tuple[str, str] | None:
    """(the short caveat, the full sentence) for a selection of `sel` (a finished `Selection.to_dict`)
    that ranked more than one finalist but measured no gap between them (`equivalent` None: too few
    scoring examples for a spread, or the gradient selector, which scores no example and so can
    never tell a signal from noise): its pick is no finding.
    One function, so table.md, the run's headline and `olft evaluate` say the same. None otherwise."""
    ranking = sel.get("ranking") or []
    if len(ranking) < 2 or "equivalent" not in sel or sel["equivalent"] is not None:
        return None
    if sel.get("selector") == "gradient":  # it scores no example at all: nothing could tell a signal from noise
        return ("unverified: the gradient score cannot tell a signal from noise",
                "the gradient selector's score is measured at initialisation, on no held-out example, so it cannot tell "
                f"a signal from noise and layer {sel.get('selected_layer')} may be chosen by chance; --selector probe, "
                "auto or exhaustive score the candidates on held-out examples and say whether any found a signal")
    n = sel.get("score_examples")
    more = ("more validation examples (a larger --max-eval-samples, if set)" if sel.get("protocol") == "validation"
            else _more_score_examples(sel))
    held = f"on {plural(n, 'scoring example')}" if n is not None else "without per-example losses"
    return ("no difference measured: the choice is a guess",
            f"no difference between the candidates could be measured {held} (a paired gap needs 2 or more), so "
            f"the choice of layer {sel.get('selected_layer')} is a guess, not a finding; use {more}")


def choice_caveat(sel: dict) -> str:
    """What a one-line summary of `sel` (a finished `Selection.to_dict`) must add to its selected
    layer, as the run's headline says it: 'no signal: the choice is a guess' where the probe chose
    and found none, or no trained finalist beat the constant predictor; else `unmeasured_caveat`'s
    short form where no gap was measured; else 'within noise of
    layers 4, 5' where layers are `equivalent` to the winner; else ''. `olft evaluate` uses it."""
    if sel.get("trained_no_signal") or (sel.get("no_signal") and probe_decided(sel)):
        return "no signal: the choice is a guess"
    unmeasured = unmeasured_caveat(sel)
    if unmeasured:
        return unmeasured[0]
    others = [layer for layer in sel.get("equivalent") or [] if layer != sel.get("selected_layer")]
    return f"within noise of {layer_list(sorted(others))}" if others else ""


def layer_list(layers: list[int]) -> str:
    """'layer 3' or 'layers 2, 3', as every selection message names layers."""
    return f"layer{'' if len(layers) == 1 else 's'} {', '.join(map(str, layers))}"


def tie_text(sel: dict, metric: str) -> str | None:
    """How the winner of `sel` (a `Selection.to_dict`) stands on held-out loss against the layers
    `equivalent` to it, in words true for either sign: trained candidates ranked by score (`metric`,
    the task's headline metric, names it) can make the winner the one with the highest held-out loss
    of them. Where several of them share the winner's score, the loss broke that tie: all of them
    are named ("layers 1, 2 tie on accuracy (71.0)"), not just the one nearest in loss. The loss is
    named for the protocol (`loss_name`: "validation loss" under --selection-data validation).
    None when nothing ties with the winner, or for results from before olft recorded `gaps`.
    """
    winner, gaps = sel.get("selected_layer"), sel.get("gaps")
    tied = [layer for layer in sel.get("equivalent") or [] if layer != winner]
    if not tied or not gaps:
        return None
    nearest = min(tied, key=lambda layer: gaps[str(layer)])  # the lowest held-out loss relative to the winner
    gap, loss = gaps[str(nearest)], loss_name(sel.get("protocol"))
    above_nearest = f"above layer {nearest}'s"
    by_score = _ranked_by_score(sel)
    level = score_tie(sel, tied)
    if level:  # the loss broke a tie on the score: every layer in it is named
        score = candidate_score(next(c for c in reversed(sel["candidates"]) if c["layer"] == winner))
        lower = f"the lower {loss} of the two" if len(level) == 2 else f"the lowest {loss} of them"
        first = f"layers {', '.join(map(str, level))} tie on {metric} ({score}); layer {winner} has {lower}"
        if gap < 0:  # a layer with a lower score has a lower loss still
            return f"{first}, but its {loss} is {_apart(sel, nearest, -gap, above_nearest)}"
        among = "" if len(level) == len(tied) + 1 else f" (and the lowest of layers {', '.join(map(str, sorted([winner, *tied])))})"
        return f"{first}{among}, but layer {nearest}'s is only {_apart(sel, nearest, gap, 'above it')}"
    first = f"layer {winner} wins on {metric}" if by_score else f"layer {winner} ranks first"
    if gap < 0:  # the loss ranks them the other way
        return f"{first} but its {loss} is {_apart(sel, nearest, -gap, above_nearest)}"
    has = f"{first} and has" if by_score else f"layer {winner} has"
    return f"{has} the lowest {loss} of these layers, but layer {nearest}'s is only {_apart(sel, nearest, gap, 'above it')}"


def floor_tied(sel: dict) -> list[int]:
    """The layers of `sel` (a `Selection.to_dict`) equivalent to the winner only because their mean
    loss is within `loss_floor` of its (`Selection.tied_in_practice`), though `equivalence_threshold`
    standard errors or more apart: nearly identical predictions, whose paired spread is tiny."""
    gaps, threshold = sel.get("gaps") or {}, sel.get("equivalence_threshold") or 0.0
    return [k for k in sel.get("tied_in_practice") or [] if gaps.get(str(k)) is not None and abs(gaps[str(k)]) >= threshold]


def _apart(sel: dict, layer: int, gap: float, where: str) -> str:
    """How far `layer`'s loss lies `where` ('above it'), in words: '0.30 standard errors above it';
    for a layer tied by the loss floor only (`floor_tied`), the mean difference first, as '0.0003
    above it (3.01 standard errors of nearly identical predictions, under the 0.0007 mean loss that
    counts as a difference)': its standard errors alone would read as a clear difference."""
    if layer not in floor_tied(sel):
        return f"{gap:.2f} standard errors {where}"
    loss = {c["layer"]: (c.get("metrics") or {}).get("loss") for c in sel.get("candidates") or []}
    mine, best = loss.get(layer), loss.get(sel.get("selected_layer"))
    size = f"{abs(mine - best):.4f} " if mine is not None and best is not None else ""
    return (f"{size}{where} ({gap:.2f} standard errors of nearly identical predictions, under the "
            f"{sel['loss_floor']:.4f} mean loss that counts as a difference)")


def plural(n: int, noun: str) -> str:
    """`n` and `noun`, the noun with an s unless n is 1: '1 candidate', '4 candidates'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


# A candidate's score with no value on the scoring set (`Candidate.undefined`), as Table 1 marks a strategy's.
UNDEFINED = "undefined §"


def candidate_score(c: dict) -> str:
    """A candidate's (or a round's) score as the selection tables show it: `UNDEFINED` where its
    metric has no value on the scoring set (its 0.0 is a stand-in), else its points."""
    return UNDEFINED if c.get("undefined") else fmt_score(c.get("score"))


def undefined_note(sel: dict, metric: str) -> list[str]:
    """The footnote to `UNDEFINED` candidate scores: why `metric` has no value on the scoring set."""
    why = next((c["undefined"] for c in sel.get("candidates") or [] if c.get("undefined")), None)
    return [f"§ {metric} on the selection's scoring set is {why}: those candidates' scores are not measurements "
            "(ranked by their stand-in 0.0, then the held-out loss)."] if why else []


def fmt_score(value: float | None) -> str:
    return "failed" if value is None else f"{100 * value:.1f}"
