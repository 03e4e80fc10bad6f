"""How candidates are ranked: headline score (ties to the lower layer) or held-out loss."""

import json
import logging

import numpy as np
import pytest
from sklearn.metrics import log_loss, mean_squared_error

from olft.cli import main
from olft.errors import OlftError
from olft.pipeline import heldout_loss
from olft.select import Candidate, Selection

FAST = ["--epochs", "1", "--selection-train-samples", "24", "--selection-eval-samples", "16", "-q"]


def _selection(scores_losses, metric="score"):
    cands = [Candidate(layer, s, 1.0, {} if loss is None else {"accuracy": s, "loss": loss})
             for layer, (s, loss) in scores_losses.items()]
    return Selection("train-holdout", cands, 10, 10, metric=metric)


def test_score_ranking_ties_go_to_the_lower_layer_and_are_flagged():
    sel = _selection({4: (0.5, 0.7), 5: (0.6, 0.9), 6: (0.6, 0.6)})
    assert sel.selected_layer == 5 and not sel.flat
    flat = _selection({4: (0.5, 0.7), 5: (0.5, 0.69), 6: (0.5, 0.71)})
    assert flat.selected_layer == 4 and flat.flat
    assert flat.to_dict()["flat"] is True and flat.to_dict()["metric"] == "score"


def test_loss_ranking_separates_tied_scores():
    sel = _selection({4: (0.5, 0.7), 5: (0.5, 0.69), 6: (0.5, 0.71)}, metric="loss")
    assert sel.selected_layer == 5 and not sel.flat
    failed = Selection("train-holdout", [Candidate(3, None, 1.0, error="nan"), *sel.candidates], 10, 10, metric="loss")
    assert failed.selected_layer == 5  # a failed candidate never wins


def test_loss_ranking_refuses_candidates_without_a_loss():
    sel = _selection({4: (0.5, None), 5: (0.5, 0.69)}, metric="loss")
    with pytest.raises(OlftError, match="--selection-metric score"):
        _ = sel.selected_layer


def test_heldout_loss_matches_sklearn():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(40, 3)), rng.integers(0, 3, size=40)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert heldout_loss(logits, labels.tolist()) == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]), rel=1e-5)
    values, golds = rng.normal(size=(40, 1)), rng.normal(size=40)
    assert heldout_loss(values, golds.tolist()) == pytest.approx(mean_squared_error(golds, values[:, 0]), rel=1e-5)


def test_select_by_loss_end_to_end(model_dirs, tiny_glue, tmp_path, caplog):
    base = ["select", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue),
            "--candidates", "all", *FAST]
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
    assert by_score["selected_layer"] == min(k for k, v in scores.items() if v == max(scores.values()))
    assert by_score["flat"] == (len(set(scores.values())) == 1)


def test_flat_selection_warns_with_the_fix(model_dirs, tiny_glue, tmp_path, caplog):
    # At a vanishing learning rate every candidate keeps the identity adapter and the same seeded
    # head, so all predict alike: the choice is the tie-break and the run must say so.
    args = ["select", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue), *FAST,
            "--lr", "1e-12", "--out", str(tmp_path / "f")]
    with caplog.at_level(logging.WARNING):
        assert main(args) == 0
    sel = json.loads((tmp_path / "f" / "results.json").read_text())["selection"]
    assert sel["flat"] is True and sel["selected_layer"] == 1
    assert "--selection-metric loss" in caplog.text and "tie-break" in caplog.text
    assert "tie-break" in (tmp_path / "f" / "table.md").read_text()
