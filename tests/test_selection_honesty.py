"""What a selection claims against what it measured: trained finalists against a constant
predictor, a proxy's unmeasured gaps, the final layer, a proxy's shared seconds."""

import json
import logging

import numpy as np
import pytest

from olft.report import table_md
from olft.select import Candidate, Selection
from test_selection import _select


def _trained(losses_by_layer, baseline, selector="exhaustive", steps=6):
    """A selection whose last stage trained `losses_by_layer` (per-example held-out losses)."""
    cands = [Candidate(layer, 0.5 + 0.01 * layer, 1.0, {"pearson": 0.0, "loss": float(np.mean(v))}, steps=steps,
                       example_losses=v) for layer, v in losses_by_layer.items()]  # fmt: skip
    sel = Selection("train-holdout", cands, 143, len(baseline), selector=selector, finalists=sorted(losses_by_layer))
    sel.rounds = [{"stage": "train", "steps": steps, "layers": sorted(losses_by_layer)}]
    sel.record_baseline(baseline, [], "mean")
    return sel


def _results(sel: dict, num_layers: int = 6) -> dict:
    return {"model": "m", "task": "stsb", "method": "adapter", "metric": "pearson", "strategies": {},
            "num_layers": num_layers, "selection": sel}  # fmt: skip


def test_trained_finalists_worse_than_a_constant_are_no_signal_and_quote_no_confidence():
    rng = np.random.default_rng(0)
    base = (2.27 + rng.normal(size=57)).tolist()
    # The user's run: two finalists far above the constant's 2.27, one clearly apart from the other.
    sel = _trained({2: [b + 7.5 + 0.1 * rng.normal() for b in base], 3: [b + 7.3 for b in base]}, base)
    assert sel.gaps()[2] > 1 and sel.trained_no_signal is True and sel.confidence is None
    d = sel.to_dict()
    assert d["trained_no_signal"] is True and d["confidence"] is None and d["baseline_loss"] == pytest.approx(np.mean(base))
    assert all(g < 0 for g in d["trained_baseline_gaps"].values()) and d["baseline_gaps"] is None  # no probe ran
    assert d["no_signal"] is None
    text = table_md(_results(d))
    assert (f"No signal: no trained candidate's held-out loss beats predicting the fit set's mean (held-out squared error "
            f"{np.mean(base):.3f}) by 1.0 standard errors or more and {1e-3 * np.mean(base):.4f} or more in mean squared error, "
            "paired per example: layers 2, 3 found no signal at this "
            "budget, so the choice among them is a guess; use more --selection-steps (the finalists trained 6 steps), more "
            "--selection-train-samples (now 143) or more --selection-eval-samples (now 57).") in text, text
    assert "standard errors below the runner-up" not in text
    from olft.plots import layers_figure

    title = layers_figure(_results(d)).axes[0].get_title()  # layers.png says what table.md says
    assert "NO SIGNAL: no trained candidate beats a constant predictor" in title.replace("\n", " "), title
    ph = _trained({2: [b + 7.5 for b in base], 3: [b + 7.3 for b in base]}, base, selector="probe-halving")
    ph.rounds.insert(0, {"stage": "probe", "layers": [0, 1, 2, 3]})  # the probe pruned 0 and 1: they never trained
    assert "or --selector exhaustive (every candidate at the full budget)." in table_md(_results(ph.to_dict()))
    # Halving over 2 candidates is one rung at the full budget, exhaustive already: it is not advised.
    two = _trained({2: [b + 7.5 for b in base], 3: [b + 7.3 for b in base]}, base, selector="halving").to_dict()
    assert "No signal:" in table_md(_results(two)) and "--selector exhaustive" not in table_md(_results(two))
    # A short rung (layers 0 and 1 trained 3 steps, then dropped): exhaustive would give them the full budget.
    short = _trained({2: [b + 7.5 for b in base], 3: [b + 7.3 for b in base]}, base, selector="halving")
    short.rounds.insert(0, {"stage": "train", "steps": 3, "layers": [0, 1, 2, 3]})
    assert "or --selector exhaustive (every candidate at the full budget)." in table_md(_results(short.to_dict()))
    # The user's run: --max-train-samples 200 left 143 fit examples of the 1000 asked for; the advice names that cap.
    capped = table_md(_results({**d, "requested_train_examples": 1000}))
    assert ("more --selection-steps (the finalists trained 6 steps), more training examples (the training split, after "
            "any --max-train-samples, left the candidates 143 fit examples of the 1000 --selection-train-samples asks "
            "for) or more --selection-eval-samples (now 57).") in capped, capped
    # ... and --max-train-samples 64 left 5 scoring examples of the 16 asked for: more of them only shrinks the fit set.
    few = table_md(_results({**d, "score_examples": 5, "requested_score_examples": 16}))
    assert ("or a larger --max-train-samples, if set (the training split left the candidates 5 scoring examples of the "
            "16 --selection-eval-samples asks for; more --selection-eval-samples would only shrink the fit set).") in few, few
    # One finalist clearly below the constant: a signal, the confidence stands, and the note says how far.
    good = _trained({2: [b + 7.5 for b in base], 3: [b - 1.0 + 0.1 * rng.normal() for b in base]}, base)
    assert good.trained_no_signal is False and good.confidence is not None and good.confidence > 1
    text = table_md(_results(good.to_dict()))
    assert "No signal" not in text and "standard errors below the runner-up" in text
    assert "the trained finalists' held-out loss (paired per example): layer 2's is " in text
    # Within noise of the constant (strictly below, less than the threshold): still no signal.
    close = _trained({3: [b - 0.01 + 0.5 * e for b, e in zip(base, rng.normal(size=57), strict=True)]}, base)
    assert close.trained_no_signal is (close.trained_gaps()[3] < 1)


def test_trained_finalists_far_above_the_constant_diverged_and_the_fix_is_a_lower_lr():
    """The user's --lr 1e6 run: held-out losses of tens of millions against the class frequencies'
    0.56. Every finalist's mean loss over DIVERGED_LOSS_RATIO times the constant's is divergence, and
    the advice is a lower --lr, not more steps or data; below that ratio the budget advice stands."""
    from olft.verdicts import DIVERGED_LOSS_RATIO, trained_no_signal_text

    rng = np.random.default_rng(1)
    base = (0.56 + 0.1 * rng.normal(size=16)).tolist()
    sel = _trained({2: [4.9e7 + b for b in base], 3: [5.3e7 + b for b in base]}, base)
    sel.record_baseline(base, [], "class frequencies")
    d = sel.to_dict()
    assert d["trained_no_signal"] is True
    text = table_md({**_results(d), "task": "sst2", "metric": "accuracy"})
    assert (f"No signal: every trained candidate's held-out loss (layer 2 4.9e+07, layer 3 5.3e+07) is over 10 times that "
            f"of predicting the class frequencies ({np.mean(base):.3f}): training diverged (confidently wrong answers, not "
            "too little data or too few steps), so the choice among layers 2, 3 is a guess; use a lower --lr (the "
            "candidates train at olft's rate).") in text, text
    assert "--selection-steps" not in text and "--selection-train-samples" not in text
    # olft's rate set by --strategy-lr olft=...: the candidates trained at it, so --lr is not the fix. The
    # selection record says so (results.json's selection, which table.md and the warning read).
    sel.rate_from = "olft"
    d = json.loads(json.dumps(sel.to_dict()))
    assert d["rate_from"] == "olft"
    words = trained_no_signal_text(d)
    assert words.endswith("so the choice among layers 2, 3 is a guess; lower olft's rate in --strategy-lr (the candidates "
                          "train at it, not at --lr)"), words
    assert "--lr (" not in table_md({**_results(d), "task": "sst2", "metric": "accuracy"})
    # One finalist just under the ratio: not every one diverged, so the budget advice stands.
    near = _trained({2: [4.9e7 + b for b in base], 3: [b + 0.9 * DIVERGED_LOSS_RATIO * np.mean(base) for b in base]}, base)
    words = trained_no_signal_text(near.to_dict())
    assert "more --selection-steps" in words and "diverged" not in words


def test_trained_selectors_record_the_constant_and_warn_when_they_lose_to_it(model_dirs, tiny_glue, tmp_path, monkeypatch,
                                                                            caplog):  # fmt: skip
    import olft.stages
    from olft.proxies import constant_losses

    real = _select(model_dirs["llama"], tiny_glue, tmp_path / "real", "--selector", "exhaustive", "--selection-steps", "2",
                   "--selection-adaptive", "0")  # fmt: skip
    assert real["baseline_loss"] is not None and real["baseline_predicts"] == "class frequencies"
    assert set(real["trained_baseline_gaps"]) == {"0", "1", "2", "3"} and real["beats_baseline"] is None
    monkeypatch.setattr(olft.stages, "constant_losses", lambda *a: [0.0 for _ in constant_losses(*a)])
    caplog.clear()
    with caplog.at_level("INFO", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "none", "--selector", "halving", "--selection-steps", "2",
                      "--selection-adaptive", "0")  # fmt: skip
    assert sel["trained_no_signal"] is True and sel["confidence"] is None
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "no trained candidate" in r.getMessage()]
    assert len(warned) == 1 and "so the choice among them is a guess" in warned[0]
    assert "--selector exhaustive" in warned[0], warned
    head = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("selected layer"))
    assert head.endswith("; no signal)") or "within noise of" in head  # never a gap to the runner-up
    assert "standard errors below the runner-up" not in caplog.text
    assert "No signal: no trained candidate's held-out loss" in (tmp_path / "none" / "table.md").read_text()


def test_gradient_selection_claims_no_measured_gap(model_dirs, tiny_glue, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "g", "--selector", "gradient")
    assert sel["finalists"] == [0, 1, 2, 3] and all(g is None for k, g in sel["gaps"].items() if k != str(sel["selected_layer"]))
    assert sel["equivalent"] is None and sel["confidence"] is None and sel["baseline_loss"] is None  # nothing measured
    assert "one finalist" not in caplog.text
    # It never says whether it found a signal: the headline, a warning, table.md and `olft evaluate` say it cannot.
    assert "(gradient selector, training-batches protocol; unverified: the gradient score cannot tell a signal from noise)" \
        in caplog.text and "finalists;" not in caplog.text, caplog.text  # a proxy has no finalists
    why = ("the gradient selector's score is measured at initialisation, on no held-out example, so it cannot tell a signal "
           f"from noise and layer {sel['selected_layer']} may be chosen by chance; --selector probe, auto or exhaustive score "
           "the candidates on held-out examples and say whether any found a signal")
    assert f"Selection: {why}." in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    text = (tmp_path / "g" / "table.md").read_text()
    assert f"Unverified: {why}." in text, text
    from olft.evaluate import evaluate_run

    assert (f"  selection: layer {sel['selected_layer']} (selector gradient; unverified: the gradient score cannot tell a "
            "signal from noise)") in evaluate_run(tmp_path / "g", quiet=True).splitlines()
    assert "scoring example" not in text and sel["score_examples"] is None  # nothing was scored
    batches = sel["rounds"][0]["batches"]
    assert batches >= 1 and (f"the gradients of {batches} training batch{'' if batches == 1 else 'es'} of "
                             f"{sel['rounds'][0]['batch_size']} from {sel['train_examples']} training examples") in text


def test_the_final_layer_is_said_to_be_the_final_layer_baseline():
    rng = np.random.default_rng(0)
    base = (2.27 + rng.normal(size=20)).tolist()
    note = "The selected layer is the final layer: OLFT and final-layer tuning train the same module."
    last = _trained({5: [b - 1.0 for b in base]}, base).to_dict()
    assert note in table_md(_results(last, num_layers=6))
    assert note not in table_md(_results(last, num_layers=7))


def test_the_final_layer_note_is_logged(model_dirs, tiny_glue, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "g", "--selector", "gradient", "--candidates", "3,2")
    assert (sel["selected_layer"] == 3) == ("the selected layer is the final layer: OLFT and final-layer tuning train the same "
                                            "module" in caplog.text)  # fmt: skip


def test_a_proxys_seconds_are_labelled_a_share_and_the_constant_is_always_quoted():
    rng = np.random.default_rng(0)
    base = (0.69 + 0.05 * rng.normal(size=40)).tolist()
    cands = [Candidate(layer, -0.3, 2.5, {"loss": 0.3}, steps=0, example_losses=[b - 0.4 for b in base]) for layer in (2, 3)]
    sel = Selection("train-holdout", cands, 143, 40, selector="probe")
    sel.rounds = [{"stage": "probe", "layers": [2, 3], "seconds": 5.0}]
    sel.record_baseline(base, cands, "class frequencies")
    text = table_md(_results(sel.to_dict()))
    assert "| 2 | -30.0 | 0.3000 | 2.5 * |" in text, text
    assert "* Per-layer share of one joint probe pass over 2 layers (5.0 s): the pass's time divided by the layer count" in text
    # Every probe beats the constant: its loss is still said, as where some do not.
    assert (f"Predicting the class frequencies has held-out loss {np.mean(base):.4f}: every candidate's probe beats it by 1.0 "
            f"standard errors or more and {1e-3 * np.mean(base):.4f} or more in mean loss.") in text


def test_adaptive_retraining_keeps_a_runner_up_clearly_below_the_winner_on_loss():
    """Ranked by score, the winner can be the worse on held-out loss; that runner-up is the layer
    the loss favours, so --selection-adaptive retrains it with the winner instead of dropping it
    for being too good (a fresh user's cola run lost its lowest-loss layer that way)."""
    from olft.selectionmd import retrained_lines

    rng = np.random.default_rng(1)
    base = (0.7 + 0.1 * rng.normal(size=57)).tolist()
    # Layer 4 wins on score (0.54 > 0.53 > 0.52); layer 3's loss is far below it, layer 2's far above.
    sel = _trained({2: [b + 0.3 for b in base], 3: [b - 0.3 + 0.01 * rng.normal() for b in base],
                    4: [b + 0.01 * rng.normal() for b in base]}, base)  # fmt: skip
    assert sel.selected_layer == 4 and sel.gaps()[3] < -1 < 1 < sel.gaps()[2]
    assert sel.equivalent == [4] and sel.contenders() == [4, 3]
    rounds = [{"stage": "train", "steps": 6, "layers": [2, 3, 4]},
              {"stage": "train", "steps": 12, "layers": [3, 4],
               "retrained": {"winner": 4, "threshold": 1.0, "gaps": {str(k): g for k, g in sel.gaps().items() if k != 4}}}]
    (line,) = [x for x in retrained_lines({"rounds": rounds}) if x]
    assert line.startswith("Retrained at 12 steps (--selection-adaptive): layers 3, 4 (held-out loss within 1.0 standard "
                           "errors of layer 4's, or below it (layer 3: score and loss disagree) after 6 steps); layer 2's was ")


def test_gradient_selection_under_validation_records_no_validation_protocol(model_dirs, tiny_glue, tmp_path, caplog):
    """The gradient selector scores no examples: --selection-data validation does not apply to it (one
    warning says so), and nothing claims validation chose the layer: no validation protocol, no
    scoring examples, no optimistic mark in table.md or results.json once the folder is tuned."""
    from olft.cli import main

    out = tmp_path / "gv"
    with caplog.at_level(logging.WARNING, logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, out, "--selector", "gradient", "--selection-data", "validation",
                      "--epochs", "0.05")  # fmt: skip
    said = [r.getMessage() for r in caplog.records if "does not apply" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("--selection-data validation does not apply to --selector gradient"), said
    assert sel["protocol"] == "training-batches" and sel["score_examples"] is None, sel
    assert main(["run", "--config", str(out / "config.json"), "--out", str(out), "--strategies", "olft", "-q"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["optimistic_scores"] == {} and results["selection"]["protocol"] == "training-batches"
    text = (out / "table.md").read_text()
    assert "‡" not in text and "optimistic" not in text and "scored on the validation split" not in text, text
    assert "Selection (training-batches)" in text and "(no held-out examples scored)" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="olft"):
        _select(model_dirs["llama"], tiny_glue, tmp_path / "gt", "--selector", "gradient")
    assert "does not apply" not in caplog.text  # --selection-data train: nothing to warn about


def test_a_tie_the_loss_broke_is_told_under_no_signal_as_a_guess():
    """The user's exhaustive run: layers 2 and 3 tie on accuracy, layer 3's held-out loss is clearly
    lower, and both lose to the constant predictor. The console and table.md still name the tie and
    the loss gap (docs/selection.md promises it), with the caveat that the choice is a guess."""
    from olft.runselection import how_sure

    rng = np.random.default_rng(1)
    base = (0.5 + 0.1 * rng.random(48)).tolist()
    losses = {2: [b + 0.6 + 0.02 * rng.normal() for b in base], 3: [b + 0.5 for b in base]}
    cands = [Candidate(layer, 0.8125, 1.0, {"accuracy": 0.8125, "loss": float(np.mean(v))}, steps=10, example_losses=v)
             for layer, v in losses.items()]  # fmt: skip
    sel = Selection("train-holdout", cands, 48, 48, selector="exhaustive", finalists=[2, 3])
    sel.rounds = [{"stage": "train", "steps": 10, "layers": [2, 3]}]
    sel.record_baseline(base, [], "class frequencies")
    d = sel.to_dict()
    assert d["trained_no_signal"] is True and d["confidence"] is None and d["selected_layer"] == 3 and d["gaps"]["2"] > 1
    tie = f"layers 2, 3 tie on accuracy (81.2); layer 3's held-out loss is {d['gaps']['2']:.1f} standard errors below layer 2's"
    head = how_sure(sel, d, "accuracy")
    assert head == f"no signal; {tie}, but with no signal the choice is still a guess", head
    text = table_md({**_results(d), "metric": "accuracy"})
    assert "No signal: no trained candidate's held-out loss" in text
    assert f"exhaustive selector: {tie}, but with no signal the choice is still a guess." in text, text


def _reviewers_balance():
    """The reviewer's repro (review15, item 1) in numbers: the fit set 40 % positive, the scoring set
    66 % positive (33 of 50), and four trained candidates that all predict P(positive) ~ 0.43 for
    every example (all 'negative', accuracy 34.0): held-out losses 0.7242-0.7244 nats, above ln 2,
    differing by 1e-4 with almost no spread. Returns (fit labels, scoring labels, layer -> losses)."""
    fit, score = [1] * 32 + [0] * 48, [1] * 33 + [0] * 17
    rng = np.random.default_rng(0)
    losses = {}
    for layer, p in ((4, 0.4301), (5, 0.4300), (6, 0.4301), (7, 0.4302)):
        jitter = 1e-6 * rng.normal(size=len(score))  # nearly identical predictions: tiny paired spread
        losses[layer] = [-np.log(p if y else 1 - p) + j for y, j in zip(score, jitter, strict=True)]
    return fit, score, losses


def test_the_constant_to_beat_is_the_stronger_of_class_frequencies_and_even_odds():
    """The fit set's class frequencies (loss 0.7784 on the reviewer's scoring set) lose to even odds
    (ln 2 = 0.6931) when the two sets differ in balance: the yardstick is then even odds, and
    candidates worse than a coin flip are no signal."""
    from olft.proxies import constant_losses, stronger_constant, uniform_losses

    fit, score, losses = _reviewers_balance()
    freq = constant_losses(fit, score, regression=False)
    assert np.mean(freq) == pytest.approx(0.7784, abs=1e-4)
    assert uniform_losses(3, 2) == pytest.approx([np.log(2)] * 3) and uniform_losses(1, 3) == pytest.approx([np.log(3)])
    name, chosen = stronger_constant({"class frequencies": freq, "uniform": uniform_losses(len(score), 2)})
    assert name == "uniform" and np.mean(chosen) == pytest.approx(np.log(2))
    # Same balance in both sets: the frequencies are the stronger (and ties go to the first named).
    same = constant_losses([0, 0, 0, 1], [0, 0, 0, 1], regression=False)
    assert stronger_constant({"class frequencies": same, "uniform": uniform_losses(4, 2)})[0] == "class frequencies"
    assert stronger_constant({"a": [1.0], "b": [1.0]})[0] == "a"
    # Against the frequencies every candidate 'beats' the constant by several standard errors; against even odds none does.
    weak = _trained(losses, freq)
    assert all(g > 1 for g in weak.trained_gaps().values()) and weak.trained_no_signal is False
    sel = _trained(losses, chosen)
    sel.baseline_predicts = name
    assert all(g < 0 for g in sel.trained_gaps().values()) and sel.trained_no_signal is True and sel.confidence is None
    text = table_md({**_results(sel.to_dict()), "metric": "accuracy"})
    assert "No signal: no trained candidate's held-out loss beats predicting even odds for every class (held-out loss 0.693)" in text
    # The run's headline says so too, before the tie (the four are equivalent): a tie of layers that learned nothing is no finding.
    from olft.runselection import how_sure
    from olft.verdicts import choice_caveat

    assert len(sel.equivalent) > 1 and how_sure(sel, sel.to_dict(), "accuracy").startswith("no signal"), sel.equivalent
    assert choice_caveat(sel.to_dict()).startswith("no signal")


def test_a_run_measures_candidates_against_the_stronger_constant_and_their_collapse(model_dirs, tiny_glue, tmp_path,
                                                                                    monkeypatch):  # fmt: skip
    """`Session.select` wiring: with class frequencies worse than even odds (patched to 5 nats an
    example) the yardstick is even odds, ln 2 on RTE; a candidate's one-class collapse (the rule
    `one_class_of`, patched to say every candidate collapsed) reaches its record and makes no signal."""
    import olft.pipeline
    import olft.stages

    monkeypatch.setattr(olft.stages, "constant_losses", lambda fit, score, regression: [5.0] * len(score))
    monkeypatch.setattr(olft.pipeline, "one_class_of", lambda task, preds, labels: "entailment")
    sel = _select(model_dirs["bert"], tiny_glue, tmp_path / "c", "--selector", "exhaustive", "--selection-steps", "2",
                  "--selection-adaptive", "0")  # fmt: skip
    assert sel["baseline_predicts"] == "uniform" and sel["baseline_loss"] == pytest.approx(np.log(2))
    assert sel["loss_floor"] == pytest.approx(1e-3 * np.log(2))
    assert [c["one_class"] for c in sel["candidates"]] == ["entailment"] * len(sel["candidates"])
    assert sel["trained_no_signal"] is True and sel["confidence"] is None


def test_a_candidate_that_predicts_one_class_is_no_signal():
    """A finalist whose loss beats the constant's clearly but that answers one class for every scoring
    example is a constant answer: no signal, as a finished strategy collapsed to one class is flagged."""
    rng = np.random.default_rng(2)
    base = (0.69 + 0.05 * rng.normal(size=40)).tolist()
    losses = {2: [b - 0.2 + 0.01 * rng.normal() for b in base], 3: [b - 0.1 + 0.01 * rng.normal() for b in base]}
    from olft.verdicts import trained_no_signal_text

    sel = _trained(losses, base)
    assert sel.trained_no_signal is False and sel.confidence is not None
    for c in sel.candidates:
        c.one_class = "negative"
    assert sel.trained_no_signal is True and sel.confidence is None
    words = trained_no_signal_text(sel.to_dict())
    assert "(layers 2, 3 predict 'negative' for every scoring example: a constant answer, no signal whatever its loss)" in words
    sel.candidates[0].one_class = None  # one finalist that answers both classes and beats the constant: a signal
    assert sel.trained_no_signal is False


def test_one_class_of_flags_a_collapse_as_finished_strategies_are_flagged():
    """Truth table of the one rule for strategies and candidates alike (`olft.pipeline.one_class_of`)."""
    from olft import tasks
    from olft.pipeline import ONE_CLASS_MIN, one_class_of

    sst2, stsb = tasks.get_task("sst2"), tasks.get_task("stsb")
    n = ONE_CLASS_MIN
    all_neg = np.tile([2.0, -1.0], (n, 1))
    mixed = np.vstack([all_neg[:-1], [[-1.0, 2.0]]])
    labels = [0, 1] * (n // 2)
    assert one_class_of(sst2, all_neg, labels) == sst2.labels[0]
    assert one_class_of(sst2, mixed, labels) is None  # two classes predicted
    assert one_class_of(sst2, all_neg, [0] * n) is None  # the labels hold one class: answering it is right
    assert one_class_of(sst2, all_neg[:-1], labels[:-1]) is None  # too few examples to call it a collapse
    assert one_class_of(stsb, np.ones((n, 1)), [float(v) for v in range(n)]) is None  # regression: no classes


def test_gaps_under_the_loss_floor_are_ties_whatever_their_standard_errors():
    """The reviewer's four constant predictors differ by 1e-4 nats with almost no paired spread: many
    standard errors, no difference. Under the loss floor (`MIN_LOSS_GAP` of the constant's loss) they
    are equivalent, retrained together, and no confidence is quoted; a gap above the floor still is."""
    from olft.proxies import uniform_losses
    from olft.select import MIN_LOSS_GAP
    from olft.verdicts import tie_text

    fit, score, losses = _reviewers_balance()
    # A signal-bearing version: the same tiny differences, all well below the constant's loss.
    base = [b + 0.2 for b in uniform_losses(len(score), 2)]
    sel = _trained(losses, base)
    for c in sel.candidates:
        c.score = 0.34  # all tie on accuracy: the loss breaks the tie
    gaps = sel.gaps()
    assert sel.selected_layer == 7 and all(abs(g) > 3 for k, g in gaps.items() if k != 7)  # 'clear' in standard errors
    assert sel.loss_floor() == pytest.approx(MIN_LOSS_GAP * np.mean(base))
    assert sorted(sel.tied_in_practice()) == [4, 5, 6] and sorted(sel.equivalent) == sorted(sel.contenders()) == [4, 5, 6, 7]
    assert sel.trained_no_signal is False and sel.confidence is None
    d = sel.to_dict()
    assert d["confidence"] is None and sorted(d["tied_in_practice"]) == [4, 5, 6]
    assert d["loss_floor"] == pytest.approx(sel.loss_floor())
    said = tie_text(d, "accuracy")
    nearest = min((k for k in gaps if k != 7), key=gaps.get)
    assert (f"layers 4, 5, 6, 7 tie on accuracy (34.0); layer 7 has the lowest held-out loss of them, but layer {nearest}'s "
            f"is only {np.mean(losses[nearest]) - np.mean(losses[7]):.4f} above it ({gaps[nearest]:.2f} standard errors of nearly identical predictions, under the "
            f"{sel.loss_floor():.4f} mean loss that counts as a difference)") == said, said
    # A gap ten times the floor is a difference: confidence quoted, nothing equivalent.
    apart = _trained({7: losses[7], 4: [v + 10 * sel.loss_floor() for v in losses[7]]}, base)
    for c in apart.candidates:
        c.score = 0.34
    assert apart.equivalent == [7] and apart.confidence is not None and apart.confidence > 3
    # A drop below the constant under the floor is no signal either, however many standard errors.
    near = _trained({2: [b - 0.1 * sel.loss_floor() for b in base]}, base)
    assert near.trained_gaps()[2] == float("inf") and near.trained_no_signal is True


def test_flat_counts_losses_within_the_loss_floor_as_tied():
    """Candidates that kept their initialisation differ by float rounding alone (it moves with the
    library version and thread count): equal scores and losses within the loss floor are flat (the
    pick is the tie-break), one loss gap at the floor or over is a ranking."""
    rng = np.random.default_rng(3)
    base = (0.69 + 0.05 * rng.normal(size=16)).tolist()

    def sel(shift, score3=0.5):
        cands = [Candidate(2, 0.5, 1.0, {"accuracy": 0.5, "loss": float(np.mean(base))}, steps=6, example_losses=base),
                 Candidate(3, score3, 1.0, {"accuracy": score3, "loss": float(np.mean(base)) + shift}, steps=6,
                           example_losses=[b + shift for b in base])]  # fmt: skip
        s = Selection("train-holdout", cands, 143, 16, selector="exhaustive", finalists=[2, 3])
        s.rounds = [{"stage": "train", "steps": 6, "layers": [2, 3]}]
        s.record_baseline([0.7] * 16, [], "class frequencies")
        return s

    floor = sel(0.0).loss_floor()
    assert floor == pytest.approx(0.0007)
    assert sel(0.0).flat and sel(1e-9).flat and sel(-0.5 * floor).flat
    assert not sel(2 * floor).flat  # a real loss gap ranks them
    assert not sel(1e-9, score3=0.6).flat  # so does a score gap
    assert sel(1e-9).to_dict()["flat"] is True
    # Flat, but the ranking still takes the lower loss: layer 3 wins by a difference under the floor, which
    # table.md, the plot and the run's warning call a tie, not the tie-break (lowest layer)
    from olft.plots import _verdict_title
    from olft.selectionmd import verdict_lines

    below = sel(-0.5 * floor).to_dict()
    assert below["selected_layer"] == 3 and below["flat"] is True
    line = verdict_lines(below, "accuracy")[-1]
    assert "lowest layer" not in line and "under the loss floor (0.0007), no real difference: still a tie" in line, line
    assert "tie-break" not in _verdict_title(below, "accuracy") and "under the floor" in _verdict_title(below, "accuracy")
    same = sel(0.0).to_dict()
    assert same["selected_layer"] == 2 and "the tie-break (lowest layer)" in verdict_lines(same, "accuracy")[-1]
    assert "the tie-break" in _verdict_title(same, "accuracy")


def test_a_selection_scored_on_one_example_says_no_difference_was_measured():
    """The reviewer's --max-train-samples 3 run, scored on one example: every candidate 100.0, no paired
    gap (None: one example has no spread), no signal flag either way. table.md, the headline and `olft
    evaluate`'s caveat say that no difference could be measured, not just 'selected layer 2'."""
    from olft.runselection import how_sure
    from olft.verdicts import choice_caveat

    losses = {0: [0.31], 1: [0.30], 2: [0.29]}
    cands = [Candidate(layer, 1.0, 1.0, {"accuracy": 1.0, "loss": v[0]}, steps=2, example_losses=v) for layer, v in losses.items()]
    sel = Selection("train-holdout", cands, 2, 1, selector="exhaustive", requested_score_examples=400)
    sel.rounds = [{"stage": "train", "steps": 2, "layers": [0, 1, 2]}]
    sel.record_baseline([0.69], [], "class frequencies")
    d = sel.to_dict()
    assert d["selected_layer"] == 2 and d["trained_no_signal"] is None and d["equivalent"] is None and not d["flat"]
    assert how_sure(sel, d, "accuracy") == "no difference measured: the choice is a guess"
    assert choice_caveat(d) == "no difference measured: the choice is a guess"
    text = table_md({**_results(d), "metric": "accuracy"})
    assert ("No difference measured: no difference between the candidates could be measured on 1 scoring example (a paired "
            "gap needs 2 or more), so the choice of layer 2 is a guess, not a finding; use a larger --max-train-samples") in text, text


@pytest.mark.parametrize("selector", ["gradient", "exhaustive"])
def test_a_loss_ranking_without_losses_names_the_one_cause_that_applies(selector):
    """The gradient selector scores no loss; any other selector's candidate lacks one only when an
    older olft saved it so. The message named both with 'and', as if both were true."""
    from olft.errors import OlftError

    cands = [Candidate(layer, 0.5, 1.0, {"accuracy": 0.5}) for layer in (1, 2)]
    sel = Selection("train-holdout", cands, 10, None, metric="loss", selector=selector)
    with pytest.raises(OlftError) as exc:
        _ = sel.selected_layer
    msg = str(exc.value)
    assert msg.startswith("Candidate layer 1 has no held-out loss to rank by --selection-metric loss: "), msg
    gradient = "the gradient selector scores none (use --selection-metric score or another --selector)"
    older = "an older olft did not save it (--overwrite scores the candidates again; or use --selection-metric score)"
    assert (gradient in msg) == (selector == "gradient") and (older in msg) == (selector != "gradient"), msg
