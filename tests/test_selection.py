"""Selectors and ranking: score (loss breaks ties, then the lower layer) or loss; halving; proxies;
confidence and equivalence."""

import json
import logging
import re

import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_squared_error

from olft.cli import main
from olft.errors import OlftError
from olft.pipeline import heldout_loss
from olft.proxies import probe_scores
from olft.select import Candidate, Selection, better_half, halving_schedule, paired_gap
from tiny import make_model_folder

FAST = ["--epochs", "1", "--selection-train-samples", "24", "--selection-eval-samples", "16", "-q"]


def _selection(scores_losses, metric="score"):
    cands = [Candidate(layer, s, 1.0, {} if loss is None else {"accuracy": s, "loss": loss})
             for layer, (s, loss) in scores_losses.items()]
    return Selection("train-holdout", cands, 10, 10, metric=metric)


def test_score_ranking_breaks_ties_by_loss_then_lower_layer():
    sel = _selection({4: (0.5, 0.7), 5: (0.6, 0.9), 6: (0.6, 0.6)})
    assert sel.ranking() == [6, 5, 4] and not sel.flat  # 5 and 6 tie on score: 6's lower loss wins
    by_loss = _selection({4: (0.5, 0.7), 5: (0.5, 0.69), 6: (0.5, 0.71)})
    assert by_loss.selected_layer == 5 and not by_loss.flat
    flat = _selection({4: (0.5, 0.7), 5: (0.5, 0.7), 6: (0.5, 0.7)})
    assert flat.selected_layer == 4 and flat.flat
    assert flat.to_dict()["flat"] is True and flat.to_dict()["metric"] == "score"


def test_loss_ranking_separates_tied_scores():
    sel = _selection({4: (0.5, 0.7), 5: (0.5, 0.69), 6: (0.5, 0.71)}, metric="loss")
    assert sel.selected_layer == 5 and not sel.flat
    failed = Selection("train-holdout", [Candidate(3, None, 1.0, error="nan"), *sel.candidates], 10, 10, metric="loss")
    assert failed.selected_layer == 5  # a failed candidate never wins


def test_loss_ranking_refuses_candidates_without_a_loss():
    sel = _selection({4: (0.5, None), 5: (0.5, 0.69)}, metric="loss")
    with pytest.raises(OlftError, match="--selection-metric score") as exc:
        _ = sel.selected_layer
    assert "an older olft did not save it (--overwrite scores the candidates again; or use --selection-metric score)" in str(exc.value)
    assert "or rerun with --overwrite" not in str(exc.value)  # no cure for the gradient selector


def test_gradient_selector_with_loss_metric_is_refused_before_anything_trains(model_dirs, tiny_glue, tmp_path, capsys):
    # It was accepted: the baselines trained, then olft failed ("no held-out loss ... or rerun with
    # --overwrite", which cannot help) and the run exited 0, "finished with failures".
    from olft.config import SelectionConfig, check_selection_metric

    out = tmp_path / "out"
    args = ["run", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), "--selector", "gradient",
            "--selection-metric", "loss", "--max-steps", "1", "--out", str(out), "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error: --selection-metric loss cannot rank under --selector gradient") and err.count("\n") == 1, err
    assert "--selection-metric score" in err and "another --selector" in err and not out.exists()
    with pytest.raises(OlftError, match="--selection-metric score, or another --selector"):
        check_selection_metric(SelectionConfig(selector="gradient", selection_metric="loss"))
    check_selection_metric(SelectionConfig(selector="probe", selection_metric="loss"))  # every other selector scores a loss
    check_selection_metric(SelectionConfig(selector="gradient", selection_metric="score"))


def test_heldout_loss_matches_sklearn():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, size=40)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert heldout_loss(logits, labels.tolist()) == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]), rel=1e-5)
    values, golds = rng.normal(size=(40, 1)), rng.normal(size=40)
    assert heldout_loss(values, golds.tolist()) == pytest.approx(mean_squared_error(golds, values[:, 0]), rel=1e-5)


def test_select_by_loss_end_to_end(model_dirs, tiny_glue, tmp_path, caplog):
    base = ["select", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue),
            "--candidates", "all", "--selector", "exhaustive", "--selection-adaptive", "0", *FAST]
    assert main([*base, "--out", str(tmp_path / "score")]) == 0
    assert main([*base, "--out", str(tmp_path / "loss"), "--selection-metric", "loss"]) == 0
    by_score = json.loads((tmp_path / "score" / "results.json").read_text())["selection"]
    by_loss = json.loads((tmp_path / "loss" / "results.json").read_text())["selection"]
    assert by_loss["metric"] == "loss" and by_score["metric"] == "score"
    # The metric only ranks: every candidate trains and scores the same either way.
    assert [(c["score"], c["metrics"]) for c in by_score["candidates"]] == [(c["score"], c["metrics"]) for c in by_loss["candidates"]]
    losses = {c["layer"]: c["metrics"]["loss"] for c in by_loss["candidates"]}
    assert all(np.isfinite(v) and v > 0 for v in losses.values())
    assert by_loss["selected_layer"] == min(losses, key=lambda k: (losses[k], k))
    scores = {c["layer"]: c["score"] for c in by_score["candidates"]}
    assert by_score["selected_layer"] == min(scores, key=lambda k: (-scores[k], losses[k], k))
    assert by_score["flat"] == (len(set(scores.values())) == 1)


def test_flat_selection_warns_with_the_fix(model_dirs, tiny_glue, tmp_path, caplog):
    # At a vanishing learning rate every candidate keeps the identity adapter and the same seeded
    # head, so all predict alike: the choice is the tie-break and the run must say so.
    args = ["select", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), *FAST,
            "--lr", "1e-12", "--selector", "exhaustive", "--out", str(tmp_path / "f")]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    sel = json.loads((tmp_path / "f" / "results.json").read_text())["selection"]
    assert sel["flat"] is True and sel["selected_layer"] == 1
    assert "--selection-steps" in caplog.text and "tie-break" in caplog.text
    assert "tie-break" in (tmp_path / "f" / "table.md").read_text()


# -- confidence and equivalence ------------------------------------------------------------------
def test_paired_gap_known_answers():
    # diff = [1, 1, 1, 2]: mean 1.25, sample sd 0.5, se 0.25 -> 5 standard errors.
    assert paired_gap([1, 1, 1, 1], [2, 2, 2, 3]) == pytest.approx(5.0)
    assert paired_gap([1, 2], [1, 2]) == 0.0
    assert paired_gap([1, 2], [2, 3]) == float("inf")  # a constant shift has no noise
    assert paired_gap(None, [1, 2]) is None and paired_gap([1], [2]) is None


def _with_losses(per_layer: dict[int, list[float]], threshold: float = 1.0) -> Selection:
    cands = [Candidate(layer, 0.5, 1.0, {"accuracy": 0.5, "loss": float(np.mean(v))}, steps=10, example_losses=v)
             for layer, v in per_layer.items()]
    return Selection("train-holdout", cands, 10, 4, threshold=threshold)


def test_confidence_is_the_runner_up_gap_and_ties_are_equivalent():
    base = [0.2, 0.4, 0.6, 0.8]
    sel = _with_losses({3: base, 4: [0.3, 0.3, 0.7, 0.8], 5: [b + 1 for b in base]})
    assert sel.ranking() == [3, 4, 5]
    # 4 vs 3: diff [0.1, -0.1, 0.1, 0], mean 0.025, sd 0.0957, se 0.0479 -> 0.52 SE: within noise.
    assert sel.confidence == pytest.approx(0.025 / (np.std([0.1, -0.1, 0.1, 0], ddof=1) / 2))
    assert sel.equivalent == [3, 4]
    d = sel.to_dict()
    assert d["equivalent"] == [3, 4] and d["confidence"] == pytest.approx(sel.confidence)
    assert "example_losses" not in d["candidates"][0]  # kept in pieces for resuming, not in results
    exact = [0.25, 0.5, 0.75, 1.0]  # + 1 stays exact in binary: a constant shift, zero noise
    clear = _with_losses({3: exact, 4: [b + 1 for b in exact]})
    assert clear.equivalent == [3] and clear.confidence == float("inf")
    # Ranked by score, a runner-up can have the far lower loss: a clear difference, not a tie.
    lower = Selection("train-holdout", [Candidate(3, 0.6, 1.0, {"accuracy": 0.6, "loss": 0.5}, steps=10, example_losses=base),
                                        Candidate(4, 0.5, 1.0, {"accuracy": 0.5, "loss": 0.4}, steps=10,
                                                  example_losses=[b - 0.1 + d for b, d in zip(base, [0.01, -0.01, 0, 0], strict=True)])],
                      10, 4)  # fmt: skip
    assert lower.selected_layer == 3 and lower.confidence < -1 and lower.equivalent == [3]
    from olft.verdicts import confidence_text

    assert confidence_text(lower.confidence).startswith("the runner-up has the lower held-out loss, by ")
    assert confidence_text(1.25) == "the winner's held-out loss is 1.2 standard errors below the runner-up's"
    assert confidence_text(None) == "one finalist"


def test_tied_layers_are_described_the_way_their_held_out_losses_point():
    """Ranked by score, the winner can have the highest held-out loss of the layers tied with it:
    the words must say so, not that it leads (both signs, and ranked by loss)."""
    from olft.verdicts import tie_text

    losses = {2: [0.70, 0.66, 0.72, 0.64], 4: [0.72, 0.65, 0.71, 0.65], 5: [0.68, 0.67, 0.69, 0.65]}
    # 5 - 2: [-0.02, 0.01, -0.03, 0.01], mean -0.0075, se 0.0103 -> -0.73; 4 - 2: mean 0.0025, se 0.0075 -> 0.33.
    cands = [Candidate(layer, score, 1.0, {"f1": score, "loss": float(np.mean(losses[layer]))}, steps=10,
                       example_losses=losses[layer]) for layer, score in ((2, 0.8), (4, 0.7), (5, 0.6))]  # fmt: skip
    sel = Selection("train-holdout", cands, 10, 4)
    d = json.loads(json.dumps(sel.to_dict()))  # as results.json holds it
    assert d["selected_layer"] == 2 and d["equivalent"] == [2, 4, 5]
    assert d["gaps"] == {"2": 0.0, "4": pytest.approx(1 / 3), "5": pytest.approx(-0.7276, abs=1e-4)}
    assert tie_text(d, "f1") == "layer 2 wins on f1 but its held-out loss is 0.73 standard errors above layer 5's"
    # The winner with the lowest loss of the tied layers: said, with the nearest one's gap.
    lowest = _with_losses({3: [0.2, 0.4, 0.6, 0.8], 4: [0.3, 0.3, 0.7, 0.8]}).to_dict()
    # Equal accuracy (0.5 each): the loss broke the tie, so the winner did not win on accuracy.
    assert tie_text(lowest, "accuracy") == ("layers 3, 4 tie on accuracy (50.0); layer 3 has the lower held-out loss of the "
                                            "two, but layer 4's is only 0.52 standard errors above it")  # fmt: skip
    ahead = {**lowest, "candidates": [{**c, "score": 0.6 if c["layer"] == 3 else c["score"]} for c in lowest["candidates"]]}
    assert tie_text(ahead, "accuracy").startswith("layer 3 wins on accuracy and has the lowest held-out loss")
    probed = {**lowest, "rounds": [{"stage": "probe"}]}  # a proxy decided: no task metric won it
    assert tie_text(probed, "accuracy").startswith("layer 3 has the lowest held-out loss of these layers, but layer 4's")
    by_loss = Selection("train-holdout", cands, 10, 4, metric="loss").to_dict()
    assert by_loss["selected_layer"] == 5 and by_loss["equivalent"] == [5, 2, 4]
    assert tie_text(by_loss, "f1").startswith("layer 5 has the lowest held-out loss of these layers, but layer 2's is only 0.73")
    # Nothing tied, or results from before olft recorded gaps: nothing to say.
    assert tie_text({**d, "equivalent": [2]}, "f1") is None and tie_text({**d, "gaps": None}, "f1") is None


def test_every_layer_tied_with_the_winner_on_score_is_named():
    """Layers 1 and 2 score the same and the loss chose 2: the words must not say 2 won on the score,
    whichever tied layer lies nearest in loss (here layer 3, which scored lower)."""
    from olft.verdicts import tie_text

    def sel(scores: dict[int, float], gaps: dict[int, float], protocol: str = "train-holdout") -> dict:
        return {"selected_layer": 2, "equivalent": [2, *(k for k in gaps if k != 2)], "metric": "score", "protocol": protocol,
                "gaps": {str(k): v for k, v in gaps.items()}, "rounds": [{"stage": "train"}],
                "candidates": [{"layer": k, "score": v} for k, v in scores.items()]}  # fmt: skip

    pair = {1: 0.71, 2: 0.71, 3: 0.70}
    assert tie_text(sel(pair, {2: 0.0, 1: 0.8, 3: 0.3}), "accuracy") == (
        "layers 1, 2 tie on accuracy (71.0); layer 2 has the lower held-out loss of the two (and the lowest of layers 1, 2, "
        "3), but layer 3's is only 0.30 standard errors above it")  # fmt: skip
    assert tie_text(sel(pair, {2: 0.0, 1: 0.8, 3: -0.5}), "accuracy") == (
        "layers 1, 2 tie on accuracy (71.0); layer 2 has the lower held-out loss of the two, but its held-out loss is 0.50 "
        "standard errors above layer 3's")  # fmt: skip
    assert tie_text(sel({1: 0.71, 2: 0.71}, {2: 0.0, 1: 0.4}, "validation"), "accuracy") == (
        "layers 1, 2 tie on accuracy (71.0); layer 2 has the lower validation loss of the two, but layer 1's is only 0.40 "
        "standard errors above it")  # fmt: skip
    three = tie_text(sel({1: 0.71, 2: 0.71, 3: 0.71}, {2: 0.0, 1: 0.8, 3: 0.3}), "accuracy")
    assert three == ("layers 1, 2, 3 tie on accuracy (71.0); layer 2 has the lowest held-out loss of them, but layer 3's is "
                     "only 0.30 standard errors above it")  # fmt: skip
    # A tied layer with another score is not in the tie: layer 2 wins on the score outright.
    assert tie_text(sel({1: 0.69, 2: 0.71, 3: 0.70}, {2: 0.0, 1: 0.8, 3: 0.3}), "accuracy").startswith(
        "layer 2 wins on accuracy and has the lowest held-out loss of these layers, but layer 3's")


def test_a_tie_on_score_that_the_loss_broke_clearly_is_said():
    """Layers 2 and 3 score the same and 3's held-out loss is far lower: not equivalent, yet the
    confidence must say the scores tie and the loss decided, naming both, not just "the runner-up"."""
    from olft.report import table_md
    from olft.verdicts import confidence_words

    low = [0.2, 0.4, 0.6, 0.8]  # 2 - 3: [0.3, 0.2, 0.3, 0.2], mean 0.25, se 0.0289 -> 8.66 SE
    losses = {2: [0.5, 0.6, 0.9, 1.0], 3: low, 4: [x + 0.5 for x in low]}
    cands = [Candidate(k, score, 1.0, {"accuracy": score, "loss": float(np.mean(losses[k]))}, steps=10,
                       example_losses=losses[k]) for k, score in ((2, 0.698), (3, 0.698), (4, 0.5))]  # fmt: skip
    d = json.loads(json.dumps(Selection("train-holdout", cands, 10, 4).to_dict()))
    assert d["selected_layer"] == 3 and d["equivalent"] == [3] and d["confidence"] == pytest.approx(8.66, abs=0.01)
    said = "layers 2, 3 tie on accuracy (69.8); layer 3's held-out loss is 8.7 standard errors below layer 2's"
    assert confidence_words(d, "accuracy") == said
    results = {"model": "m", "task": "sst2", "metric": "accuracy", "method": "adapter", "strategies": {}, "selection": d}
    assert f"exhaustive selector: {said}." in table_md(results)
    # Three on the winner's score: all named, the runner-up the next lowest in loss.
    three = {**d, "candidates": [{**c, "score": 0.698} for c in d["candidates"]]}
    assert confidence_words(three, "accuracy") == (
        "layers 2, 3, 4 tie on accuracy (69.8); layer 3's held-out loss is 8.7 standard errors below layer 2's, the next lowest")
    # The winner ahead on the score: the plain words; ranked by loss, no score tie to tell.
    ahead = {**d, "candidates": [{**c, "score": 0.7 if c["layer"] == 3 else c["score"]} for c in d["candidates"]]}
    assert confidence_words(ahead, "accuracy") == "the winner's held-out loss is 8.7 standard errors below the runner-up's"
    assert confidence_words({**d, "metric": "loss"}, "accuracy").startswith("the winner's held-out loss is 8.7")


def test_a_confidence_after_adaptive_retraining_says_which_round_it_measures():
    """--selection-adaptive retrained layers 2 and 3 at 20 steps: the confidence is that round's, and
    the line must say so, or it reads against the 'within 1.0 standard errors after 10 steps' below it."""
    from olft.report import table_md
    from olft.verdicts import confidence_words

    sel = {"selected_layer": 3, "ranking": [3, 2], "equivalent": [3], "confidence": 3.7, "metric": "score",
           "protocol": "train-holdout", "selector": "exhaustive", "train_examples": 8, "score_examples": 8, "seconds": 1.0,
           "candidates": [{"layer": 2, "score": 0.7, "steps": 20, "seconds": 1.0},
           {"layer": 3, "score": 0.72, "steps": 20, "seconds": 1.0}, {"layer": 4, "score": 0.6, "steps": 10, "seconds": 1.0}],
           "rounds": [{"stage": "train", "steps": 10, "layers": [2, 3, 4]},
                      {"stage": "train", "steps": 20, "layers": [2, 3],
                       "retrained": {"winner": 3, "threshold": 1.0, "gaps": {"2": 0.6, "4": 2.5}}}]}  # fmt: skip
    said = "after retraining at 20 steps, the winner's held-out loss is 3.7 standard errors below the runner-up's"
    assert confidence_words(sel, "accuracy") == said
    results = {"model": "m", "task": "sst2", "metric": "accuracy", "method": "adapter", "strategies": {}, "selection": sel}
    table = table_md(results)
    assert f"exhaustive selector: {said}." in table and "after 10 steps); layer 4's was" in table
    # Still tied after retraining: the near-tie line says which round too.
    sel.update(equivalent=[3, 2], gaps={"3": 0.0, "2": 0.4})
    assert "Layers 3, 2 are within noise of each other after retraining at 20 steps (exhaustive selector)" in table_md(results)
    # Without retraining, no round is named.
    assert confidence_words({**sel, "rounds": sel["rounds"][:1]}, "accuracy").startswith("the winner's held-out loss")


def test_proxy_without_losses_reports_the_winner_alone():
    sel = Selection("train-holdout", [Candidate(1, 0.2, 0.0, {}, steps=0), Candidate(2, 0.3, 0.0, {}, steps=0)], 10, 4)
    assert sel.selected_layer == 2 and sel.confidence is None and sel.equivalent == [2]


# -- successive halving --------------------------------------------------------------------------
@pytest.mark.parametrize("n, steps, rungs", [
    (1, 150, [(1, 150)]),
    (2, 150, [(2, 150)]),
    (3, 100, [(3, 50), (2, 100)]),
    (6, 150, [(6, 37), (3, 75), (2, 150)]),
    (10, 160, [(10, 20), (5, 40), (3, 80), (2, 160)]),
])  # fmt: skip
def test_halving_schedule_gives_the_finalists_the_full_budget(n, steps, rungs):
    assert halving_schedule(n, steps) == rungs


def test_better_half_keeps_the_top_half_rounded_up():
    assert better_half([5, 1, 3, 2, 4, 0]) == [1, 3, 5]
    assert better_half([4, 2, 3]) == [2, 4] and better_half([7]) == [7]


def _select(model_dir, glue, out, *extra):
    args = ["select", "--model", str(model_dir), "--task", "rte", "--glue-dir", str(glue), "--candidates", "all",
            "--selection-train-samples", "32", "--selection-eval-samples", "24", "-q", "--out", str(out), *extra]
    assert main(args) == 0
    return json.loads((out / "results.json").read_text())["selection"]


def test_halving_keeps_the_better_half_each_rung(model_dirs, tiny_glue, tmp_path):
    sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "h", "--selector", "halving", "--selection-steps", "8",
                  "--selection-adaptive", "0")
    rounds = sel["rounds"]
    assert [(r["layers"], r["steps"]) for r in rounds] == [([0, 1, 2, 3], 4), (sorted(rounds[0]["ranking"][:2]), 8)]
    assert [(r["stage"], r["selector"]) for r in rounds] == [("train", "halving")] * 2  # each round says what ran it
    assert sel["finalists"] == rounds[-1]["layers"] and sel["selected_layer"] in sel["finalists"]
    assert sel["selected_layer"] == rounds[-1]["ranking"][0]
    steps = {c["layer"]: c["steps"] for c in sel["candidates"]}
    assert all(steps[k] == 8 for k in sel["finalists"]) and all(steps[k] == 4 for k in steps if k not in sel["finalists"])
    assert sel["seconds"] == pytest.approx(sum(r["seconds"] for r in rounds))


def test_selection_records_cpu_seconds_and_unknown_stays_unknown(model_dirs, tiny_glue, tmp_path):
    """Selection's CPU seconds sum its stages as `seconds` does (cache build + candidates); a
    candidate kept from a folder written before olft recorded CPU time leaves the total None."""
    out = tmp_path / "c"
    sel = _select(model_dirs["llama"], tiny_glue, out, "--selector", "exhaustive", "--selection-steps", "2",
                  "--selection-adaptive", "0")  # fmt: skip
    cpus = [c["cpu_seconds"] for c in sel["candidates"]]
    assert all(c > 0 for c in cpus) and sel["cpu_seconds"] > sum(cpus)  # plus building the shared cache
    assert f"min wall, {sel['cpu_seconds'] / 60:.2f} min CPU; selected layer" in (out / "table.md").read_text()  # no OLFT time to exclude it from
    (out / "pieces" / "selection.json").unlink()
    old = out / "pieces" / "candidate-2-2.json"
    old.write_text(json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "cpu_seconds"}))
    sel = _select(model_dirs["llama"], tiny_glue, out, "--selector", "exhaustive", "--selection-steps", "2",
                  "--selection-adaptive", "0")  # fmt: skip
    assert sel["cpu_seconds"] is None and "min CPU" not in (out / "table.md").read_text()
    probe = _select(model_dirs["llama"], tiny_glue, tmp_path / "p", "--selector", "probe")
    assert probe["cpu_seconds"] == pytest.approx(sum(c["cpu_seconds"] for c in probe["candidates"])) and probe["cpu_seconds"] > 0


def test_default_selector_is_auto():
    from olft.config import SelectionConfig

    assert SelectionConfig().selector == "auto"  # the benchmark's choice (docs/selection.md)


def test_adaptive_retrains_equivalent_finalists_with_twice_the_steps(model_dirs, tiny_glue, tmp_path):
    # A threshold no gap reaches makes every candidate equivalent to the winner, on any CPU (a
    # vanishing learning rate did too, but then the gaps are float rounding, which varies by CPU).
    tied = ["--selection-steps", "3", "--selector", "exhaustive", "--equivalence-threshold", "1e9"]
    sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "a", *tied, "--selection-adaptive", "1")
    assert [(r["stage"], r["selector"], r["steps"]) for r in sel["rounds"]] == [("train", "exhaustive", 3), ("train", "exhaustive", 6)]
    assert sel["rounds"][1]["layers"] == sel["rounds"][0]["layers"]  # every candidate was tied
    # Each round keeps its own losses (the first round's are replaced in `candidates`), and the
    # retrained round says which rule chose its layers: the gaps to the first round's winner.
    first, again = sel["rounds"]
    final = {str(c["layer"]): c["metrics"]["loss"] for c in sel["candidates"]}
    assert again["losses"] == final and sorted(first["losses"]) == sorted(final) and first["losses"] != final
    why = again["retrained"]
    assert (why["winner"], why["threshold"], sorted(why["gaps"])) == (
        first["ranking"][0], 1e9, sorted(str(k) for k in first["layers"] if k != first["ranking"][0]))
    table = (tmp_path / "a" / "table.md").read_text()
    assert (f"Retrained at 6 steps (--selection-adaptive): layers 0, 1, 2, 3 (held-out loss within 1000000000.0 standard "
            f"errors of layer {why['winner']}'s after 3 steps).") in table
    plain = _select(model_dirs["llama"], tiny_glue, tmp_path / "p", *tied, "--selection-adaptive", "0")
    assert len(plain["rounds"]) == 1 and plain["equivalent"] == [0, 1, 2, 3]
    apart = _select(model_dirs["llama"], tiny_glue, tmp_path / "s", *tied[:4], "--equivalence-threshold", "1e-9",
                    "--selection-adaptive", "1")  # fmt: skip
    assert len(apart["rounds"]) == 1 and apart["equivalent"] == [apart["selected_layer"]]  # nothing to retrain


# -- proxies: no training run of any candidate ---------------------------------------------------
@pytest.mark.parametrize("selector", ["probe", "gradient"])
def test_proxies_are_deterministic_and_train_nothing(model_dirs, tiny_glue, tmp_path, monkeypatch, selector):
    import olft.pipeline

    def no_training(*args, **kwargs):
        raise AssertionError("a proxy must not run a training loop")

    monkeypatch.setattr(olft.pipeline, "fit", no_training)
    runs = [_select(model_dirs["bert"], tiny_glue, tmp_path / f"{selector}{i}", "--selector", selector) for i in range(2)]
    a, b = ([(c["layer"], c["score"], c["metrics"]) for c in r["candidates"]] for r in runs)
    assert a == b and runs[0]["selected_layer"] == runs[1]["selected_layer"]
    assert [c["steps"] for c in runs[0]["candidates"]] == [0, 0, 0, 0]
    assert runs[0]["rounds"] == [{**runs[0]["rounds"][0], "stage": selector, "selector": selector, "layers": [0, 1, 2, 3]}]
    scores = [c["score"] for c in runs[0]["candidates"]]
    assert len(set(scores)) == 4  # layers differ: a signal, not a tie
    if selector == "gradient":  # zero-initialised up-projections still get gradient at init
        assert all(c["metrics"]["grad_norm"] > 0 for c in runs[0]["candidates"])
    else:
        assert all(c["score"] == -c["metrics"]["loss"] for c in runs[0]["candidates"])


def test_probe_scores_match_a_known_separable_case():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    signal = np.c_[labels * 4.0 - 2.0, rng.normal(size=(200, 3))]  # first feature carries the label
    noise = rng.normal(size=(200, 4))
    good = probe_scores(signal[:100], labels[:100].tolist(), signal[100:], labels[100:].tolist(), regression=False)
    bad = probe_scores(noise[:100], labels[:100].tolist(), noise[100:], labels[100:].tolist(), regression=False)
    assert good[1]["accuracy"] == 1.0 and good[0] > bad[0] and bad[1]["loss"] > 0.6
    assert len(good[2]) == 100 and np.mean(good[2]) == pytest.approx(good[1]["loss"])


def test_constant_baseline_predicts_the_class_frequencies_or_the_mean():
    from olft.proxies import constant_losses

    fit, score = [0, 0, 0, 1], [0, 1, 1, 2]  # class 2 never fitted: the probe's floor, not infinity
    losses = constant_losses(fit, score, regression=False)
    assert losses[:3] == pytest.approx([-np.log(0.75), -np.log(0.25), -np.log(0.25)])
    assert losses[3] == pytest.approx(-np.log(1e-12))
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=200)
    share = np.bincount(labels[:100]) / 100
    assert np.mean(constant_losses(labels[:100].tolist(), labels[100:].tolist(), regression=False)) == pytest.approx(
        log_loss(labels[100:], np.tile(share, (100, 1)), labels=[0, 1]))
    assert constant_losses([1.0, 3.0], [2.0, 4.0], regression=True) == [0.0, 4.0]  # squared error from the fit mean, 2


def _probed(losses_by_layer, baseline, threshold=1.0):
    cands = [Candidate(layer, -float(np.mean(v)), 0.0, {"loss": float(np.mean(v))}, steps=0, example_losses=v)
             for layer, v in losses_by_layer.items()]
    sel = Selection("train-holdout", cands, 10, len(baseline), selector="probe", threshold=threshold)
    sel.rounds = [{"stage": "probe", "layers": sorted(losses_by_layer)}]
    sel.record_baseline(baseline, cands, "class frequencies")
    return sel


def test_probes_that_do_not_beat_a_constant_by_more_than_noise_are_no_signal():
    rng = np.random.default_rng(0)
    base = (0.69 + 0.05 * rng.normal(size=40)).tolist()
    worse = {0: [b + 0.2 for b in base], 1: [b + 0.1 + 0.3 * e for b, e in zip(base, rng.normal(size=40), strict=True)]}
    # Layer 2 is below the constant by 0.002 on average with a spread of 0.3: strictly lower, within noise.
    close = [b - 0.002 + 0.3 * e for b, e in zip(base, rng.normal(size=40), strict=True)]
    close = [v - (np.mean(close) - np.mean(base) + 0.002) for v in close]
    sel = _probed({**worse, 2: close}, base)
    assert np.mean(close) < np.mean(base) and 0 < sel.baseline_gaps[2] < 1
    assert sel.ranking()[0] == 2 and sel.no_signal is True
    d = sel.to_dict()
    assert d["baseline_loss"] == pytest.approx(np.mean(base)) and d["baseline_predicts"] == "class frequencies"
    assert d["beats_baseline"] == {"0": False, "1": False, "2": False} and d["no_signal"] is True
    assert d["confidence"] == sel.confidence  # the gap between layers is kept, but reported as no signal
    strict = _probed({**worse, 2: close}, base, threshold=0.0)  # threshold 0: strictly below is enough
    assert strict.beats_baseline() == {0: False, 1: False, 2: True} and strict.no_signal is False
    clear = _probed({**worse, 2: [b - 0.1 for b in base]}, base)
    assert clear.beats_baseline() == {0: False, 1: False, 2: True} and clear.no_signal is False
    assert _selection({4: (0.5, 0.7), 5: (0.6, 0.9)}).to_dict()["no_signal"] is None  # no probe ran


def _more_fit_examples(sel: dict) -> str:
    """The no-signal advice's remedy for the fit set of `sel` (capped by the split, or by the option)."""
    n, asked = sel["train_examples"], sel["requested_train_examples"]
    if n < asked:
        return (f"more training examples (the training split, after any --max-train-samples, left the probe {n} fit "
                f"examples of the {asked} --selection-train-samples asks for)")
    return f"more --selection-train-samples (now {n})"


def test_table_says_no_signal_instead_of_a_confidence():
    from olft.plots import _verdict_title
    from olft.report import table_md

    rng = np.random.default_rng(1)
    base = (0.69 + 0.05 * rng.normal(size=40)).tolist()
    sel = _probed({0: [b + 0.2 for b in base], 1: [b + 0.1 for b in base]}, base).to_dict()
    # A confidence of a guess would mislead whoever reads results.json: null, as the table quotes none.
    assert sel["no_signal"] is True and sel["confidence"] is None and sel["gaps"]["0"] > 1
    results = {"model": "m", "task": "rte", "method": "adapter", "metric": "accuracy", "strategies": {}, "selection": sel}
    text = table_md(results)
    assert ("No signal: no candidate's probe beats predicting the class frequencies (held-out loss "
            f"{np.mean(base):.3f}) by 1.0 standard errors or more and {1e-3 * np.mean(base):.4f} or more in mean loss: the probe "
            "found no signal at this budget, so the choice is a guess; use more --selection-train-samples (now 10) or "
            "--selector exhaustive.") in text, text
    capped = table_md({**results, "selection": {**sel, "requested_train_examples": 1000}})  # the split left 10 of 1000
    assert ("use more training examples (the training split, after any --max-train-samples, left the probe 10 fit "
            "examples of the 1000 --selection-train-samples asks for) or --selector exhaustive.") in capped
    assert "standard errors below the runner-up" not in text
    assert "NO SIGNAL: no probe beats a constant predictor" in _verdict_title(sel, "accuracy")  # layers.png's title
    pruned = _probed({0: [b + 0.2 for b in base], 1: [b + 0.1 for b in base]}, base)
    pruned.rounds.append({"stage": "train", "layers": [0, 1]})  # the probe only pruned: the trained stage chose
    for c, drop in zip(pruned.candidates, (0.2, 0.1), strict=True):  # trained, they beat the constant (else no confidence)
        c.example_losses = [b - drop + 0.01 * e for b, e in zip(base, rng.normal(size=40), strict=True)]
    assert pruned.no_signal is True and pruned.to_dict()["confidence"] == pytest.approx(pruned.gaps()[0])
    mixed = _probed({0: [b + 0.2 for b in base], 1: [b - 0.1 for b in base]}, base).to_dict()
    assert mixed["no_signal"] is False and mixed["confidence"] > 1
    text = table_md({**results, "selection": mixed})
    assert "No signal" not in text and "standard errors below the runner-up" in text
    assert (f"Predicting the class frequencies has held-out loss {np.mean(base):.4f}: the probe of layer 1 beats it by "
            f"1.0 standard errors or more and {1e-3 * np.mean(base):.4f} or more in mean loss, that of layer 0 does not") in text


def test_a_probe_without_signal_warns_and_keeps_its_ranking(model_dirs, tiny_glue, tmp_path, monkeypatch, caplog):
    import olft.stages
    from olft.proxies import constant_losses

    real = _select(model_dirs["llama"], tiny_glue, tmp_path / "real", "--selector", "auto")
    assert real["probe_keep"] is None  # 4 candidates: auto passes nothing on, the probe decides
    assert set(real["beats_baseline"]) == {"0", "1", "2", "3"} and real["baseline_predicts"] == "class frequencies"
    assert real["no_signal"] == (not any(real["beats_baseline"].values()))
    # A constant that no probe comes near: every probe's loss is far above it.
    monkeypatch.setattr(olft.stages, "constant_losses", lambda *a: [0.0 for _ in constant_losses(*a)])
    with caplog.at_level("INFO", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "none", "--selector", "auto")
    assert sel["no_signal"] is True and not any(sel["beats_baseline"].values())
    assert sel["ranking"] == real["ranking"] and sel["confidence"] is None  # the ranking is unchanged; no confidence of a guess
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "no signal" in r.getMessage()]
    assert warned == ["Selection: no candidate's probe beats predicting the class frequencies (held-out loss 0.000) by 1.0 "
                      "standard errors or more: the probe found no signal at this budget, so the choice is a guess; use "
                      f"{_more_fit_examples(sel)} or --selector exhaustive."], warned
    assert f"selected layer {sel['selected_layer']} (auto selector, train-holdout protocol; no signal)" in caplog.text
    assert "No signal: no candidate's probe beats" in (tmp_path / "none" / "results.json").parent.joinpath("table.md").read_text()
    caplog.clear()
    # probe-halving: the probe only pruned, so the pruning is the guess; the trained stage's confidence stands.
    with caplog.at_level("WARNING", logger="olft"):
        ph = _select(model_dirs["llama"], tiny_glue, tmp_path / "ph", "--selector", "probe-halving", "--selection-steps", "2",
                     "--selection-adaptive", "0")  # fmt: skip
    kept = ", ".join(map(str, ph["rounds"][1]["layers"]))
    assert f"so its pick of layers {kept} for training is a guess; use {_more_fit_examples(ph)} or --selector halving" in caplog.text
    assert "No signal: no candidate's probe beats" in (tmp_path / "ph" / "table.md").read_text()
    monkeypatch.setattr(olft.stages, "constant_losses", lambda *a: [50.0 for _ in constant_losses(*a)])
    monkeypatch.setattr(olft.stages, "uniform_losses", lambda n, k: [50.0] * n)  # even odds too: the stronger constant
    caplog.clear()
    with caplog.at_level("WARNING", logger="olft"):
        every = _select(model_dirs["llama"], tiny_glue, tmp_path / "all", "--selector", "probe")
    assert every["no_signal"] is False and all(every["beats_baseline"].values()) and "no signal" not in caplog.text


def test_probe_halving_prunes_by_the_probe_then_trains(model_dirs, tiny_glue, tmp_path):
    sel = _select(model_dirs["bert"], tiny_glue, tmp_path / "ph", "--selector", "probe-halving", "--selection-steps", "4",
                  "--selection-adaptive", "0")
    probe, trained = sel["rounds"]
    assert probe["stage"] == "probe" and trained == {**trained, "stage": "train", "steps": 4}
    assert (probe["selector"], trained["selector"]) == ("probe", "halving")  # the rounds' own, not probe-halving
    assert trained["layers"] == sorted(probe["ranking"][:2])


def test_probe_keep_passes_the_probes_top_k_to_training(model_dirs, tiny_glue, tmp_path):
    sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "k2", "--selector", "probe-halving", "--probe-keep", "2",
                  "--selection-steps", "8", "--selection-adaptive", "0")
    probe, trained = sel["rounds"]  # two kept: both get the full budget at once, no short rung
    assert probe["stage"] == "probe" and len(probe["layers"]) == 4
    assert (trained["layers"], trained["steps"]) == (sorted(probe["ranking"][:2]), 8)
    assert sel["probe_keep"] == 2 and sorted(map(int, probe["scores"])) == probe["layers"]
    # The probe's scores of the kept layers stay in its round; `candidates` holds their trained ones.
    trained_scores = {c["layer"]: c["score"] for c in sel["candidates"]}
    assert all(probe["scores"][str(k)] != trained_scores[k] for k in trained["layers"])
    assert trained["scores"] == {str(k): trained_scores[k] for k in trained["layers"]}
    _assert_probe_kept(sel)
    for c in sel["candidates"]:  # each trained candidate's piece too: what an unfinished selection lists
        if c["steps"]:
            piece = json.loads((tmp_path / "k2" / "pieces" / f"candidate-{c['layer']}-{c['steps']}.json").read_text())
            assert piece["probe"] == c["probe"], piece
    sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "k3", "--selector", "probe-halving", "--probe-keep", "3",
                  "--selection-steps", "8", "--selection-adaptive", "0")
    assert [(r["layers"], r["steps"], r["selector"]) for r in sel["rounds"][1:]] == [
        (sorted(sel["rounds"][0]["ranking"][:3]), 4, "halving"), (sorted(sel["rounds"][1]["ranking"][:2]), 8, "halving")]
    _assert_probe_kept(sel)  # through two rungs: the second rung's entry keeps what the first kept


def _assert_probe_kept(sel: dict) -> None:
    """Each trained candidate's entry keeps the probe's numbers of it (`probe`: its round's score and
    loss) beside its trained ones; a layer the probe pruned is the probe's entry itself (no `probe`)."""
    probe = sel["rounds"][0]
    trained = {layer for r in sel["rounds"][1:] for layer in r["layers"]}
    for c in sel["candidates"]:
        if c["layer"] in trained:
            assert c["steps"] > 0 and c["probe"]["score"] == probe["scores"][str(c["layer"])], c
            assert c["probe"]["metrics"]["loss"] == probe["losses"][str(c["layer"])] == -c["probe"]["score"]
            assert c["score"] == sel["rounds"][-1]["scores"].get(str(c["layer"]), c["score"]) != c["probe"]["score"]
        else:
            assert c["steps"] == 0 and c.get("probe") is None and c["score"] == probe["scores"][str(c["layer"])]


def test_probe_keep_of_every_candidate_is_refused_before_loading(model_dirs, tmp_path, capsys):
    """Keeping all candidates would make the probe a cost that prunes nothing: refused from the
    model's config, before anything loads or a run folder is written."""
    args = ["select", "--model", str(model_dirs["llama"]), "--candidates", "all", "--selector", "probe-halving",
            "--out", str(tmp_path / "o")]
    for keep in ("4", "9"):
        assert main([*args, "--probe-keep", keep]) == 2
        err = capsys.readouterr().err
        assert f"--probe-keep {keep} keeps all 4 candidates (0,1,2,3)" in err and "--probe-keep 3 or fewer" in err, err
    assert not (tmp_path / "o").exists()
    # Two candidates: no --probe-keep both prunes and trains, so only the trained selectors are named.
    assert main([*args, "--candidates", "0,1", "--probe-keep", "2"]) == 2
    err = capsys.readouterr().err
    assert "Use --selector halving or exhaustive to train every candidate." in err and "--probe-keep 1" not in err, err


def test_probe_halving_that_trains_nothing_says_so(model_dirs, tiny_glue, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "k1", "--selector", "probe-halving", "--probe-keep", "1")
    assert [r["stage"] for r in sel["rounds"]] == ["probe"] and sel["probe_keep"] == 1
    assert "the probe kept 1 of 4 candidates" in caplog.text and "no layer is trained" in caplog.text
    assert "--probe-keep 2 or more trains the probe's best layers." in caplog.text
    # table.md's selection paragraph says it too: it outlives the console.
    assert ("The probe kept 1 of 4 candidates (--probe-keep 1), so no layer was trained: the choice is the probe's"
            in (tmp_path / "k1" / "table.md").read_text())
    # Two candidates: --probe-keep 2 would be refused, so neither warning advises it (the user's cola-ph run).
    caplog.clear()
    with caplog.at_level("WARNING", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "k2", "--selector", "probe-halving", "--probe-keep", "1",
                      "--candidates", "2,3", "--equivalence-threshold", "1e9")  # fmt: skip
    assert "the probe kept 1 of 2 candidates" in caplog.text and "--probe-keep 2" not in caplog.text, caplog.text
    assert "--selector halving or exhaustive trains every candidate." in caplog.text
    tied = next(r.getMessage() for r in caplog.records if "are equivalent within" in r.getMessage())
    assert tied.startswith("Layers 2, 3 are equivalent") and "--selector exhaustive" in tied, tied  # no Python list


def test_equivalence_advice_names_the_cap_on_the_scoring_set(model_dirs, tiny_glue, tmp_path, caplog):
    tied = ["--selector", "exhaustive", "--selection-steps", "2", "--selection-adaptive", "0", "--equivalence-threshold", "1e9"]
    with caplog.at_level("WARNING", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "c", *tied, "--max-train-samples", "40")
    assert sel["score_examples"] < 24 and "more training examples (--max-train-samples caps the scoring set)" in caplog.text
    shrunk = (f"the training split has 40 examples, fewer than --selection-train-samples 32 plus --selection-eval-samples 24, "
              f"so candidates fit on {sel['train_examples']} and are scored on {sel['score_examples']}")
    assert shrunk in caplog.text  # said when it happens, not only in table.md
    # Under 20 scoring examples: warned at the start, naming the cap (more --selection-eval-samples only shrinks the fit set).
    assert (f"the candidates are scored on only {sel['score_examples']} examples (under 20)" in caplog.text
            and "What limits the scoring set: --max-train-samples, if set" in caplog.text), caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "u", *tied)
    assert "(more --selection-eval-samples or --selection-adaptive 1 may separate them)" in caplog.text
    # The headline quotes no gap to the runner-up among equivalent finalists: it names them, or,
    # where none beat the constant (a threshold of 1e9 standard errors leaves none that do), says no signal.
    others = [layer for layer in sel["equivalent"] if layer != sel["selected_layer"]]
    how = ("no signal" if sel["trained_no_signal"] else
           f"within noise of layer{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}")
    assert f"selected layer {sel['selected_layer']} (exhaustive selector, train-holdout protocol; {how}" in caplog.text, caplog.text
    assert "standard errors below the runner-up" not in caplog.text
    # The warning says which way the held-out losses point, as results.json records them.
    said = next(r.getMessage() for r in caplog.records if "are equivalent within" in r.getMessage())
    loss, winner = {c["layer"]: c["metrics"]["loss"] for c in sel["candidates"]}, sel["selected_layer"]
    score = {c["layer"]: c["score"] for c in sel["candidates"]}
    level = sorted(layer for layer in sel["equivalent"] if score[layer] == score[winner])
    if len(level) > 1:  # the loss broke a tie on accuracy: every layer in it is named
        assert f"layers {', '.join(map(str, level))} tie on accuracy ({100 * score[winner]:.1f}); layer {winner} has" in said, said
    elif min(sel["equivalent"], key=loss.get) != winner:
        assert f"layer {winner} wins on accuracy but its held-out loss is " in said, said
    else:
        assert f"layer {winner} wins on accuracy and has the lowest held-out loss of these layers" in said
    if min(sel["equivalent"], key=loss.get) != winner:
        named = int(re.search(r"standard errors above layer (\d+)'s", said)[1])
        assert named in sel["equivalent"] and loss[named] < loss[winner]
    assert "leads" not in said, said
    assert "shrunk in proportion" not in caplog.text and "scored on only" not in caplog.text  # 24 examples: no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="olft"):
        _select(model_dirs["llama"], tiny_glue, tmp_path / "p", "--selector", "probe", "--selection-eval-samples", "10")
    assert ("the candidates are scored on only 10 examples (under 20): one example moves their accuracy by 10.0 points, "
            "so their differences are mostly noise. What limits the scoring set: --selection-eval-samples (now 10).") \
        in caplog.text, caplog.text


def test_equivalence_advice_under_validation_scoring_names_max_eval_samples(model_dirs, tiny_glue, tmp_path, caplog):
    """Under --selection-data validation the scoring set is the validation split capped by
    --max-eval-samples, so that is the flag to raise; adaptive retraining that ran and left a tie
    is raised one more round."""
    tied = ["--selector", "exhaustive", "--selection-steps", "2", "--equivalence-threshold", "1e9", "--selection-data",
            "validation", "--selection-adaptive", "1"]  # fmt: skip
    with caplog.at_level("WARNING", logger="olft"):
        sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "v", *tied, "--max-eval-samples", "20")
    assert sel["protocol"] == "validation" and sel["score_examples"] == 20 and len(sel["rounds"]) == 2
    said = next(r.getMessage() for r in caplog.records if "are equivalent within" in r.getMessage())
    assert "within the noise of 20 scoring examples (a larger --max-eval-samples (now 20: it caps the validation examples " \
           "that score them) or --selection-adaptive 2 may separate them)" in said, said
    assert "--selection-eval-samples" not in said
    # Scored on validation: the loss is named for it, as table.md's column and verdict name it.
    assert "standard errors of validation loss: layer" in said and "held-out" not in said, said
    assert "held-out" not in (tmp_path / "v" / "table.md").read_text().split("Selection (validation)")[1]
    caplog.clear()
    with caplog.at_level("WARNING", logger="olft"):
        _select(model_dirs["llama"], tiny_glue, tmp_path / "w", *tied)  # uncapped: every validation example scored
    said = next(r.getMessage() for r in caplog.records if "are equivalent within" in r.getMessage())
    assert "(more scoring data (every validation example scored them; --selection-data train scores on " in said, said


def test_selection_eval_samples_under_validation_scoring_warns_once(model_dirs, tiny_glue, tmp_path, caplog):
    """--selection-data validation scores on the validation split (after --max-eval-samples): a
    --selection-eval-samples the user set is ignored there, and one warning says so and names the fix."""
    def warned(name: str, *extra: str) -> tuple[dict, list[str]]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="olft"):
            sel = _select(model_dirs["bert"], tiny_glue, tmp_path / name, "--selector", "probe", *extra)
        return sel, [r.getMessage() for r in caplog.records if "does not apply" in r.getMessage()]

    sel, said = warned("v", "--selection-data", "validation", "--max-eval-samples", "30")  # _select sets 24
    assert sel["score_examples"] == 30
    assert said == ["--selection-eval-samples 24 does not apply under --selection-data validation: the candidates are "
                    "scored on the validation split (30 examples), which --max-eval-samples limits (now 30; it limits every "
                    "evaluation split). Drop --selection-eval-samples, or use --selection-data train to score them on that "
                    "many held-out training examples."], said
    # The default (400) is what a run folder's config.json holds whether or not it was typed: not warned about.
    assert warned("d", "--selection-data", "validation", "--selection-eval-samples", "400")[1] == []
    assert warned("t", "--selection-data", "train")[1] == []  # applies: scored on 24 held-out training examples


def test_auto_keep_sizes_training_to_the_cost_bound():
    from olft.select import auto_keep

    # A quarter of the candidates, when that is two or more: probe-keep-k costs about k/N of exhaustive.
    assert [auto_keep(n) for n in (1, 2, 6, 7, 8, 10, 11, 12, 30)] == [0, 0, 0, 0, 2, 2, 2, 3, 7]


def test_auto_selector_is_the_probe_on_few_candidates_and_trains_its_top_on_many(model_dirs, tiny_glue, tmp_path):
    sel = _select(model_dirs["llama"], tiny_glue, tmp_path / "a4", "--selector", "auto")
    assert [r["stage"] for r in sel["rounds"]] == ["probe"] and sel["probe_keep"] is None  # 4 candidates: the probe decides
    probed = _select(model_dirs["llama"], tiny_glue, tmp_path / "p4", "--selector", "probe")
    scores = [[(c["layer"], c["score"], c["metrics"]) for c in s["candidates"]] for s in (sel, probed)]
    assert sel["selected_layer"] == probed["selected_layer"] and scores[0] == scores[1]
    deep = make_model_folder("llama", tmp_path / "llama8", layers=8)
    # Tied finalists (a threshold no gap reaches) are reported, not retrained: auto keeps to its cost bound.
    sel = _select(deep, tiny_glue, tmp_path / "a8", "--selector", "auto", "--selection-steps", "4", "--equivalence-threshold", "1e9")
    probe, trained = sel["rounds"]  # 8 candidates: the probe's top two, each for the full budget, once
    assert len(sel["equivalent"]) == 2
    assert sel["probe_keep"] == 2 and len(probe["layers"]) == 8
    assert (trained["stage"], trained["layers"], trained["steps"]) == ("train", sorted(probe["ranking"][:2]), 4)
    assert (probe["selector"], trained["selector"]) == ("probe", "halving")  # auto runs probe-halving's steps
    assert sel["selected_layer"] in trained["layers"]


def test_probe_keep_without_probe_halving_is_named_as_ignored(capsys, caplog):
    """Another selector leaves --probe-keep unused, as auto leaves --selection-adaptive: one warning
    naming it and what would use it, before anything loads (here the missing model then fails)."""
    for selector in ("auto", "exhaustive"):
        caplog.clear()
        assert main(["select", "--model", "none", "--probe-keep", "2", "--selector", selector]) == 2
        assert f"--probe-keep is ignored under --selector {selector}" in caplog.text, caplog.text
        assert "pass --selector probe-halving" in caplog.text and "--probe-keep" not in capsys.readouterr().err
    assert main(["select", "--model", "none", "--selector", "probe-halving", "--probe-keep", "0"]) == 2
    assert "--probe-keep must be a positive number" in capsys.readouterr().err


def test_folders_from_before_selectors_resume_as_exhaustive():
    from olft.config import RunConfig, SelectionConfig
    from olft.ownership import config_differences

    old = RunConfig().to_dict()
    for key in ("selector", "selection_adaptive"):
        del old["selection"][key]  # an olft without selectors did not write them
    same = RunConfig(selection=SelectionConfig(selector="exhaustive", selection_adaptive=0)).to_dict()
    assert config_differences(old, same) == []
    assert [d.split(":")[0] for d in config_differences(old, RunConfig().to_dict())] == [
        "selection.selection_adaptive", "selection.selector"]


def _bench_unit(work, name, oracle, picks, oracle_seconds=None):
    """One (task, seed) folder of benchmarks/selection.py: oracle-<layer>.json per layer ({layer: score}),
    select-<setup>.json per setup ({setup: (pick, ranking, seconds)})."""
    folder = work / name
    folder.mkdir(parents=True)
    for layer, score in oracle.items():
        piece = {"layer": layer, "score": score, **({"seconds": oracle_seconds} if oracle_seconds else {})}
        (folder / f"oracle-{layer}.json").write_text(json.dumps(piece))
    for setup, (pick, ranking, seconds) in picks.items():
        sel = {"selected_layer": pick, "ranking": ranking, "rounds": [{"ranking": ranking}], "flat": False,
               "seconds": seconds, "candidates": [{"layer": k} for k in oracle]}
        (folder / f"select-{setup}.json").write_text(json.dumps(sel))


def _selection_report():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import selection_report

    return selection_report


def test_selection_benchmark_scores_picks_against_the_oracle(tmp_path):
    selection_report = _selection_report()
    unit = lambda *a: _bench_unit(tmp_path / "work", *a)  # noqa: E731
    unit("sst2-s0", {0: 0.70, 1: 0.80, 2: 0.75}, {"exhaustive": (2, [2, 1, 0], 100.0), "probe": (1, [1, 2, 0], 5.0)})
    unit("cola-s0", {0: 0.0, 1: 0.0, 2: 0.0}, {"exhaustive": (0, [0, 1, 2], 100.0), "probe": (2, [2, 1, 0], 5.0)})
    for setup, extra in (("probe", {"no_signal": True, "confidence": None}), ("exhaustive", {"confidence": 1.5})):
        path = tmp_path / "work" / "sst2-s0" / f"select-{setup}.json"  # a probe with no signal records no confidence
        path.write_text(json.dumps({**json.loads(path.read_text()), **extra}))
    selection_report.write_report(tmp_path / "work", tmp_path / "out", "m", "adapter", "cmd", planned=4)
    data = json.loads((tmp_path / "out" / "selection-m-adapter.json").read_text())
    assert {r["setup"]: r["confidence"] for r in data["rows"] if r["unit"] == "sst2-s0"} == {"exhaustive": 1.5, "probe": None}
    assert data["partial"] and data["oracle_flat_units"] == ["cola-s0"]
    ex, probe = data["summary"]["exhaustive"], data["summary"]["probe"]
    assert ex["units"] == 1 and ex["regret_mean"] == pytest.approx(5.0) and ex["top1"] == 0 and ex["top3"] == 1
    assert probe["regret_mean"] == 0 and probe["top1"] == 1 and probe["cost"] == pytest.approx(0.05)
    assert probe["spearman"] == pytest.approx(1.0) and ex["spearman"] == pytest.approx(0.5)
    assert (tmp_path / "out" / "selection-m-adapter.png").is_file()
    assert "(PARTIAL)" in (tmp_path / "out" / "selection-m-adapter.md").read_text()
    short = selection_report.summary_md(data).splitlines()  # the short table docs/selection.md quotes
    assert short[0].endswith("picks (cola-s0, sst2-s0) |")  # the flat unit's picks are shown, its regret left out
    assert short[2] == "| exhaustive | 1 | 5.00 | 5.00 | 0% | 1.00 | 0, 2 |"
    assert short[3] == "| probe | 1 | 0.00 | 0.00 | 100% | 0.05 | 2, 1 |"
    assert short[-1] == "2 units of 4 (partial); left out as flat (every layer within 0.5 points): cola-s0."


def test_selection_benchmark_report_only_without_pieces_says_so(tmp_path, capsys):
    """--report-only on a work dir with no finished unit (a fresh clone) exits nonzero naming what is
    missing, instead of writing nothing and exiting 0; the report script's --help is argparse's."""
    selection_report = _selection_report()
    assert selection_report.write_report(tmp_path / "work", tmp_path / "out", "m", "adapter", "cmd") is False
    import selection

    with pytest.raises(SystemExit) as stop:
        selection.main(["--model", "minilm-l6", "--report-only", "--work-dir", str(tmp_path / "work"),
                        "--results-dir", str(tmp_path / "out")])  # fmt: skip
    assert str(stop.value).startswith(f"no finished pieces in {tmp_path / 'work' / 'minilm-l6-adapter'}: nothing to report")
    assert not (tmp_path / "out").exists()


def test_selection_benchmark_measures_the_oracles_own_seed_noise(tmp_path):
    selection_report = _selection_report()

    def unit(name, oracle, pick):
        picks = {"exhaustive": (pick, [pick], 60.0), "probe": (pick, [pick], 6.0)}
        _bench_unit(tmp_path / "work", name, oracle, picks, oracle_seconds=30.0)

    # Seed 0's best layer is 1, seed 1's is 2: each seed's oracle, used to pick for the other, loses 10 and 4 points.
    unit("sst2-s0", {0: 0.50, 1: 0.80, 2: 0.70}, pick=2)
    unit("sst2-s1", {0: 0.50, 1: 0.70, 2: 0.74}, pick=2)
    selection_report.write_report(tmp_path / "work", tmp_path / "out", "m", "adapter", "cmd", planned=2)
    data = json.loads((tmp_path / "out" / "selection-m-adapter.json").read_text())
    other = data["summary"]["oracle-other-seed"]
    assert other["units"] == 2 and other["regret_mean"] == pytest.approx(7.0) and other["top1"] == 0
    assert other["cost"] == pytest.approx(90.0 / 60.0)  # a whole oracle (3 layers x 30 s) against exhaustive's 60 s
    # Against the seed-mean oracle (0: 50, 1: 75, 2: 72), picking layer 2 loses 3 points in both units.
    assert data["summary"]["probe"]["regret_seed_mean"] == pytest.approx(3.0)
    assert data["summary"]["probe"]["regret_mean"] == pytest.approx(5.0)  # 10 on seed 0, 0 on seed 1


def test_selection_benchmark_costs_cpu_seconds_where_recorded(tmp_path):
    """Cost counts CPU seconds when every selector of a unit has them (wall seconds grow with the
    machine's load); a unit with one piece lacking them falls back to wall seconds throughout."""
    selection_report = _selection_report()
    unit = lambda *a: _bench_unit(tmp_path / "work", *a)  # noqa: E731
    unit("sst2-s0", {0: 0.70, 1: 0.80}, {"exhaustive": (1, [1, 0], 100.0), "probe": (1, [1, 0], 10.0)})
    unit("sst2-s1", {0: 0.70, 1: 0.80}, {"exhaustive": (1, [1, 0], 100.0), "probe": (1, [1, 0], 10.0)})
    for name, cpu in [("exhaustive", 50.0), ("probe", 1.0)]:  # s0: both have CPU seconds; s1: only exhaustive
        for unit_name in ("sst2-s0",) + (("sst2-s1",) if name == "exhaustive" else ()):
            path = tmp_path / "work" / unit_name / f"select-{name}.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "cpu_seconds": cpu}))
    selection_report.write_report(tmp_path / "work", tmp_path / "out", "m", "adapter", "cmd", planned=2)
    rows = json.loads((tmp_path / "out" / "selection-m-adapter.json").read_text())["rows"]
    probe = {r["unit"]: r for r in rows if r["setup"] == "probe"}
    assert probe["sst2-s0"]["cost"] == pytest.approx(1.0 / 50.0) and probe["sst2-s0"]["seconds_basis"] == "cpu"
    assert probe["sst2-s1"]["cost"] == pytest.approx(10.0 / 100.0) and probe["sst2-s1"]["seconds_basis"] == "wall"
    assert "CPU seconds on sst2-s0; wall seconds on sst2-s1" in (tmp_path / "out" / "selection-m-adapter.md").read_text()


def test_selection_report_compares_selectors_on_the_units_they_share(tmp_path):
    """A selector that ran on fewer units is also compared on just those units, like for like."""
    selection_report = _selection_report()
    unit = lambda *a: _bench_unit(tmp_path / "work", *a)  # noqa: E731
    unit("sst2-s0", {0: 0.70, 1: 0.80, 2: 0.75}, {"exhaustive": (1, [1, 2, 0], 100.0), "probe": (2, [2, 1, 0], 5.0)})
    unit("rte-s0", {0: 0.50, 1: 0.60, 2: 0.70}, {"probe": (0, [0, 1, 2], 5.0)})
    selection_report.write_report(tmp_path / "work", tmp_path / "out", "m", "adapter", "cmd", planned=2)
    data = json.loads((tmp_path / "out" / "selection-m-adapter.json").read_text())
    assert data["summary"]["probe"]["regret_mean"] == pytest.approx(12.5)  # 5 and 20 points over both units
    assert data["common_units"] == ["sst2-s0"] and data["summary_common_units"]["probe"]["regret_mean"] == pytest.approx(5.0)
    assert "The same on the 1 units every selector ran (sst2-s0)" in (tmp_path / "out" / "selection-m-adapter.md").read_text()


def test_selection_benchmark_help_explains_every_option(capsys):
    """`benchmarks/selection.py --help`: every option says what it is and its default."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import selection

    options = [a for a in selection.build_parser()._actions if a.dest != "help"]
    assert len(options) == 15
    bare = [a.option_strings[0] for a in options if not a.help or "(default" not in a.help]
    assert bare == [], f"options without a help text naming their default: {bare}"
    with pytest.raises(SystemExit):
        selection.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for a in options:
        assert " ".join((a.help % vars(a)).split()) in shown, a.option_strings[0]


# -- one candidate: nothing to choose --------------------------------------------------------------
@pytest.mark.parametrize(("command", "selector"), [(["run", "--strategies", "olft"], "exhaustive"), (["select"], "probe")])
def test_one_candidate_is_the_choice_with_no_selection_run(model_dirs, tiny_glue, tmp_path, monkeypatch, capsys, caplog,
                                                           command, selector):
    import olft.stages

    def no_selection(*args, **kwargs):
        raise AssertionError("one candidate leaves nothing to choose: no candidate may be trained or probed")

    monkeypatch.setattr(olft.stages.SelectionMixin, "select", no_selection)
    out = tmp_path / "one"
    args = [*command, "--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--out", str(out),
            "--candidates", "1", "--selector", selector, "--max-steps", "2", *FAST]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    # The selection options FAST sets do nothing here, under this selector as under auto: one line says so.
    assert ("--selection-eval-samples, --selection-train-samples are ignored with one candidate layer: it is the "
            "choice, and no selection runs.") in caplog.text, caplog.text
    sel = json.loads((out / "results.json").read_text())["selection"]
    assert sel["status"] == "finished" and sel["selected_layer"] == 1 and sel["note"] == "one candidate: nothing to choose"
    assert sel["candidates"] == [] and sel["seconds"] == 0.0 and sel["confidence"] is None and sel["selector"] == selector
    assert sel["trained_no_signal"] is None and sel["no_signal"] is None and sel["protocol"] is None
    table = (out / "table.md").read_text()
    assert "Selection: one candidate: nothing to choose. Layer 1, the only candidate, is tuned with no selection run" in table
    assert "guess" not in table and "| layer |" not in table
    capsys.readouterr()
    assert main(["evaluate", "--run", str(out)]) == 0
    assert "  selection: layer 1 (one candidate: nothing to choose)" in capsys.readouterr().out


# -- the Python API ---------------------------------------------------------------------------------
def test_select_layer_returns_the_results_its_folder_holds(model_dirs, tiny_glue, tmp_path):
    """`olft.select_layer` returns results.json's dict (the keys its docstring and the README name),
    and the folder's table.md names the Python call that continues it, not the CLI command alone."""
    import olft

    out = tmp_path / "py"
    cfg = olft.RunConfig(model=olft.ModelConfig(str(model_dirs["bert"])),
                         data=olft.DataConfig("rte", glue_dir=str(tiny_glue)), out=str(out))
    cfg.selection.candidates, cfg.selection.selector = "all", "probe"
    cfg.selection.selection_train_samples, cfg.selection.selection_eval_samples = 32, 24
    results = olft.select_layer(cfg, quiet=True)
    assert results == json.loads((out / "results.json").read_text())
    assert results["status"] == "complete" and results["strategies"] == {} and results["num_layers"] == 4
    sel = results["selection"]
    assert sel["selected_layer"] == sel["ranking"][0] and sorted(sel["ranking"]) == [0, 1, 2, 3]
    assert [c["layer"] for c in sel["candidates"]] == [0, 1, 2, 3] and all("score" in c for c in sel["candidates"])
    assert {"confidence", "equivalent", "selector", "protocol", "rounds", "no_signal"} <= set(sel)
    table = (out / "table.md").read_text()
    assert f"cfg.out = {str(out.resolve())!r}; olft.run(cfg, given=())` does the same" in table, table


def test_selection_benchmark_continues_a_stopped_selector_from_its_candidates(model_dirs, tiny_glue, tmp_path):
    """A selector unit stopped after its first candidate continues from it: the candidate is not
    trained again, the result is an uninterrupted run's, its cost still counts that candidate's
    seconds, and the pieces go once the unit's file is written."""
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import selection

    from olft.pipeline import Session

    args = argparse.Namespace(model=str(model_dirs["llama"]), glue_dir=tiny_glue, max_train_samples=40, max_eval_samples=16,
                              method="adapter", epochs=1, candidates="0,1")  # fmt: skip

    def run(folder, stop_after=None):
        session = selection.session_for(args, "rte", 0)
        session.cfg.selection.selection_steps, session.cfg.selection.selection_train_samples = 2, 24
        session.cfg.selection.selection_eval_samples = 12
        trained = []
        tune = Session.tune

        def counted(self, layers, *a, **k):
            if stop_after is not None and len(trained) == stop_after:
                raise KeyboardInterrupt
            trained.append(layers)
            return tune(self, layers, *a, **k)

        Session.tune = counted
        try:
            selection.run_selectors(session, folder, [0, 1], ["exhaustive"])
        finally:
            Session.tune = tune
        return trained

    assert run(tmp_path / "whole") == [[0], [1]]
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "stopped", stop_after=1)
    assert sorted(p.name for p in (tmp_path / "stopped" / "select-exhaustive.pieces").iterdir()) == ["candidate-0-2.json"]
    assert not (tmp_path / "stopped" / "select-exhaustive.json").exists()
    assert run(tmp_path / "stopped") == [[1]]  # layer 0 is taken from its piece
    whole, resumed = (json.loads((tmp_path / d / "select-exhaustive.json").read_text()) for d in ("whole", "stopped"))
    assert resumed["resumed_candidates"] == 1 and "resumed_candidates" not in whole
    assert [(c["layer"], c["score"], c["metrics"]) for c in resumed["candidates"]] == \
        [(c["layer"], c["score"], c["metrics"]) for c in whole["candidates"]]
    assert resumed["selected_layer"] == whole["selected_layer"]
    assert resumed["seconds"] >= sum(c["seconds"] for c in resumed["candidates"])
    assert not (tmp_path / "stopped" / "select-exhaustive.pieces").exists()
