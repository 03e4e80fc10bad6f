"""A run's selection step: the layer OLFT tunes, from the run folder's finished selection or by
running the selection (`Session.select`) and saving it, with the candidates an interrupted run
finished taken as they are, each new one saved the moment it finishes; and the log lines that
report the winner, how sure it is, and what would separate a tie.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict

from olft import report
from olft.config import RunConfig
from olft.layerspec import check_candidates
from olft.pipeline import Session
from olft.runfolder import RunFolder
from olft.select import Candidate, Selection, probe_decided
from olft.verdicts import (
    confidence_words,
    flat_choice_words,
    floor_tied,
    guessed_tie_text,
    layer_list,
    loss_name,
    no_signal_text,
    plural,
    tie_text,
    trained_no_signal_text,
    unmeasured_caveat,
)

log = logging.getLogger(__name__)

# results.json's selection `note` where the candidates are one layer: nothing trained or scored.
ONE_CANDIDATE = "one candidate: nothing to choose"


def selected_layer(session: Session, folder: RunFolder, results: dict) -> int:
    """The selection's winner: from the folder's finished selection, else by running it (and
    saving it); with one candidate layer, that layer, with no selection run (`one_candidate`)."""
    saved = session.dist.broadcast(folder.load_piece("selection") if folder.writer else None)
    if saved is not None and saved["selection"].get("selected_layer") is not None:
        results["selection"] = saved["selection"]
        results["distributed"]["selection_wall"] = saved["selection_wall"]
        log.info("selection already finished (kept from the run folder): layer %d", saved["selection"]["selected_layer"])
        return saved["selection"]["selected_layer"]
    s = session.cfg.selection
    candidates = check_candidates(s.candidates, session.num_layers, s.selector, s.probe_keep)
    if len(candidates) == 1:
        results["selection"], results["distributed"]["selection_wall"] = one_candidate(session.cfg, candidates[0]), {"seconds": 0.0}
        log.info("selected layer %d: %s (--candidates %s), so no candidate is trained or probed and the %s selector "
                 "spends nothing", candidates[0], ONE_CANDIDATE, s.candidates, s.selector)  # fmt: skip
    else:
        _select(session, folder, results)
    folder.save_piece("selection", None, {"selection": results["selection"],
                                          "selection_wall": results["distributed"]["selection_wall"]})
    return results["selection"]["selected_layer"]


def one_candidate(cfg: RunConfig, layer: int) -> dict:
    """results.json's `selection` when the candidates are `layer` alone: a choice with nothing to
    choose from, so none trained or scored (no budget spent, no protocol, no confidence, no
    signal to miss), saying so in its `note`; in `Selection.to_dict`'s shape, so every reader finds its keys."""
    s = cfg.selection
    empty = Selection(None, [], 0, None, metric=s.selection_metric, selector=s.selector,  # type: ignore[arg-type]
                      threshold=s.equivalence_threshold).to_dict()
    return {**empty, "status": "finished", "selected_layer": layer, "ranking": [layer], "flat": False, "note": ONE_CANDIDATE}


def _select(session: Session, folder: RunFolder, results: dict):
    # Rank 0 reads what is finished and tells the others, so all agree even without a shared disk.
    # Pieces are named layer-steps: halving and adaptive stages train a layer at several budgets.
    done = {}
    if folder.writer:
        for name in folder.piece_names("candidate"):
            piece = folder.load_piece("candidate", name)
            if piece is not None and piece.get("steps") is not None:
                c = Candidate(**piece)
                done[(c.layer, c.steps)] = c
    done = session.dist.broadcast(done)
    # The probe stage an earlier run finished (probe-halving, auto, probe): taken as it is, not probed again.
    probed = session.dist.broadcast(folder.load_piece("probe") if folder.writer else None)

    def finished(c: Candidate) -> None:
        folder.save_piece("candidate", f"{c.layer}-{c.steps}", asdict(c))
        folder.refresh(results)  # results.json lists it at once, under an unfinished selection
        folder.write_results(results)
        _log_candidate(c, results["metric"])

    def probe_finished(piece: dict) -> None:
        folder.save_piece("probe", None, piece)
        folder.refresh(results)  # its scores, under an unfinished selection, while the finalists train
        folder.write_results(results)

    t0 = time.perf_counter()
    selection = session.select(on_candidate=finished, done=done, on_probe=probe_finished, probed=probed)
    results["selection"] = selection.to_dict()
    results["distributed"]["selection_wall"] = {"seconds": time.perf_counter() - t0}
    folder.write_results(results)
    log.info("selected layer %d (%s selector, %s protocol; %s)", selection.selected_layer, selection.selector,
             selection.protocol, how_sure(selection, results["selection"], results["metric"]))
    if selection.no_signal:
        log.warning("Selection: %s.", no_signal_text(results["selection"]))
    if selection.trained_no_signal:
        log.warning("Selection: %s.", trained_no_signal_text(results["selection"]))
    unmeasured = None if selection.no_signal or selection.trained_no_signal else unmeasured_caveat(results["selection"])
    if unmeasured:
        log.warning("Selection: %s.", unmeasured[1])
    if selection.selected_layer == session.num_layers - 1:
        log.info("Note: %s.", report.FINAL_LAYER_NOTE)
    s = session.cfg.selection
    if selection.flat:
        log.warning(
            "Every candidate ranked the same on the %s, so layer %d was chosen by %s, not by a signal. "
            "Give selection more data or steps (--selection-train-samples, now %d; "
            "--selection-steps, now %s).", "gradient score" if selection.score_examples is None
            else plural(selection.score_examples, "scoring example"),
            selection.selected_layer, flat_choice_words(results["selection"]), s.selection_train_samples,
            s.selection_steps,
        )  # fmt: skip
    elif len(selection.equivalent) > 1:
        trained = selection.rounds and selection.rounds[-1]["stage"] == "train"
        # Adaptive retraining ran its --selection-adaptive rounds and left them tied: one more round may split them.
        more = (", or tuning them with --selector exhaustive," if selection.selector == "auto"
                else f" or --selection-adaptive {s.selection_adaptive + 1}" if trained
                else ", or training the probe's best with --probe-keep 2," if selection.selector == "probe-halving"
                and len({c.layer for c in selection.candidates}) > 2  # --probe-keep 2 is refused for 2 candidates
                else ", or tuning them with --selector exhaustive,")  # fmt: skip
        floored = floor_tied(results["selection"])  # tied by the loss floor, not by the noise
        floor = f" (or within {selection.loss_floor():.4f} of its mean: {layer_list(sorted(floored))})" if floored else ""
        log.warning(
            "Layers %s are equivalent within %.1f standard errors of %s%s: %s, within the noise of %s (%s%s "
            "may separate them).", ", ".join(map(str, selection.equivalent)), selection.threshold, loss_name(selection.protocol), floor,
            tie_text(results["selection"], results["metric"]), plural(selection.score_examples, "scoring example"),
            _more_scoring_data(selection, session.cfg), more,
        )  # fmt: skip
    return selection


def how_sure(selection, sel: dict, metric: str) -> str:
    """How sure the selection headline says `selection` (`sel` its `to_dict`) is: the layers within
    noise of the winner, "no signal" (with the tie the loss broke, if it broke one: still a guess),
    or `confidence_words`."""
    # A lead among probes that all lose to a constant is noise, as is one among trained finalists
    # that all do: "no signal" comes first (as table.md's and `olft evaluate`'s `choice_caveat`),
    # since a tie among layers that learned nothing is no finding either.
    guess = (selection.no_signal and probe_decided(sel)) or selection.trained_no_signal
    unmeasured = unmeasured_caveat(sel)  # no gap measured: the pick is no finding (the warning says why)
    if unmeasured and not guess:
        return unmeasured[0]
    # Among equivalent finalists the gap to the runner-up by score says nothing: the warning tells the tie.
    others = [layer for layer in selection.equivalent if layer != selection.selected_layer]
    if others and not guess:
        return f"within noise of {layer_list(others)}"
    if guess:
        tie = guessed_tie_text(sel, metric)
        return f"no signal; {tie}" if tie else "no signal"
    return confidence_words(sel, metric)


def _more_scoring_data(selection, cfg: RunConfig) -> str:
    """Which flag enlarges the set that scored the candidates, for the equivalence warning.

    Under --selection-data train it is --selection-eval-samples, unless a small training split
    capped the set below it (then --max-train-samples); under --selection-data validation it is
    the validation split capped by --max-eval-samples, which --selection-eval-samples does not touch.
    """
    s, cap = cfg.selection, cfg.data.max_eval_samples
    if selection.protocol == "validation":
        if cap is not None and selection.score_examples >= cap:
            return f"a larger --max-eval-samples (now {cap}: it caps the validation examples that score them)"
        return "more scoring data (every validation example scored them; --selection-data train scores on --selection-eval-samples of train)"
    if selection.score_examples < s.selection_eval_samples:
        return "more training examples (--max-train-samples caps the scoring set)"
    return "more --selection-eval-samples"


def _log_candidate(c: Candidate, metric: str) -> None:
    if c.score is None:  # Session.select has logged the failure, with its reason, as an error
        log.debug("candidate layer %2d: failed in %.1fs", c.layer, c.seconds)
    else:
        loss = c.metrics.get("loss")
        log.info("candidate layer %2d (%s steps): %s=%.4f%s in %.1fs", c.layer, c.steps, metric, c.score,
                 "" if loss is None else f" loss={loss:.4f}", c.seconds)  # fmt: skip
