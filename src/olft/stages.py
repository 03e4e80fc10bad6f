"""Choosing a layer on a loaded `Session`: the selection sets, and the stages that score candidates.

`SelectionMixin` gives `Session` its `select()`: proxies (probe, gradient) score layers without
training; trained stages (exhaustive, halving rungs, adaptive re-runs) tune each candidate alone
with `Session.tune` on the selection set and score it on the held-out set, one shared cache per
stage. What the record holds and how it ranks lives in `olft.select`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from olft import precision, tasks
from olft.config import SelectionConfig
from olft.data import Encoded
from olft.layerspec import check_candidates
from olft.proxies import constant_losses, gradient_scores, layer_features, probe_scores, stronger_constant, uniform_losses
from olft.runfolder import fault_point
from olft.select import (
    GRADIENT_PROTOCOL,
    Candidate,
    Selection,
    auto_keep,
    better_half,
    halving_schedule,
    probe_finalists,
    probe_piece,
)
from olft.tasks.sampling import shrink_sizes
from olft.train import NonFiniteLoss
from olft.verdicts import plural

if TYPE_CHECKING:
    from olft.pipeline import Session

log = logging.getLogger(__name__)


class SelectionMixin:
    """`Session`'s selection: its sets, its stages and their candidates (mixed into `Session`)."""

    def selection_sets(self) -> tuple[str, Encoded, Encoded]:
        """(protocol, candidate-training set, candidate-scoring set).

        Under --selection-data validation the scoring set is the first evaluation split (after
        --max-eval-samples), so a --selection-eval-samples other than its default is ignored:
        one warning says so and names the option that does limit it. The gradient selector scores
        nothing (`GRADIENT_PROTOCOL`): --selection-data validation does not apply to it, and one
        warning says so. A scoring set under `SMALL_SCORING_SET` examples is warned about, naming
        the setting that limits it.
        """
        s, seed = self.cfg.selection, self.cfg.train.seed
        if s.selector == "gradient" and s.selection_data == "validation":
            log.warning("--selection-data validation does not apply to --selector gradient: it scores no examples, "
                        "validation or held-out (it sums the gradients of training batches at initialisation), so no "
                        "validation example chooses the layer and OLFT's validation score is not optimistic. Drop "
                        "--selection-data validation, or use a selector that scores candidates (probe, exhaustive, ...).")  # fmt: skip
        fit_part, score_part = draw_selection_examples(self.train_examples, s, seed)
        if score_part is None:  # --selection-data validation
            first = next(iter(self.eval_enc))
            if s.selection_eval_samples != SelectionConfig.selection_eval_samples:
                cap = self.cfg.data.max_eval_samples
                log.warning("--selection-eval-samples %d does not apply under --selection-data validation: the candidates "
                            "are scored on the %s split (%d examples), which --max-eval-samples limits (now %s; it limits "
                            "every evaluation split). Drop --selection-eval-samples, or use --selection-data train to score "
                            "them on that many held-out training examples.", s.selection_eval_samples, first,
                            len(self.eval_enc[first]), "unset" if cap is None else cap)  # fmt: skip
            cap, n = self.cfg.data.max_eval_samples, len(self.eval_enc[first])
            _warn_small_scoring_set(n, f"--max-eval-samples (now {cap})" if cap is not None and n >= cap
                                    else f"nothing: the {first} split holds only {n} examples; --selection-data train scores "
                                    "on --selection-eval-samples of train", self.task.metric)  # fmt: skip
            return "validation", self.encode(fit_part), self.eval_enc[first]
        if s.selector == "gradient":  # it scores nothing: the scoring set is never used
            return GRADIENT_PROTOCOL, self.encode(fit_part), self.encode(score_part)
        if len(fit_part) + len(score_part) < s.selection_train_samples + s.selection_eval_samples:
            log.warning("selection: the training split has %d examples, fewer than --selection-train-samples %d plus "
                        "--selection-eval-samples %d, so candidates fit on %d and are scored on %d (both shrunk in proportion)",
                        len(self.train_examples), s.selection_train_samples, s.selection_eval_samples, len(fit_part),
                        len(score_part))  # fmt: skip
        _warn_small_scoring_set(len(score_part), f"--selection-eval-samples (now {s.selection_eval_samples})"
                                if len(score_part) >= s.selection_eval_samples else "--max-train-samples, if set (the "
                                "training split capped the scoring set: more --selection-eval-samples only shrinks the fit set)",
                                self.task.metric)  # fmt: skip
        return "train-holdout", self.encode(fit_part), self.encode(score_part)

    def select(self, on_candidate=None, done: dict[tuple[int, int], Candidate] | None = None,
               on_probe=None, probed: dict | None = None) -> Selection:
        """Choose a layer among the candidates with the configured selector (see `olft.select`).

        Trained stages (exhaustive, halving rungs, adaptive re-runs) tune each candidate alone on
        the selection set for a number of optimizer steps and score it on the held-out set, one
        shared cache per stage. `done` maps (layer, steps) to candidates finished by an earlier,
        interrupted run, taken as they are; `on_candidate` sees each newly trained one. Likewise
        `probed`, the probe stage an earlier run finished (`select.probe_piece`), is taken as it is
        when it probed these candidates, and `on_probe` sees the piece of a probe stage run anew.
        """
        s = self.cfg.selection
        candidates = check_candidates(s.candidates, self.num_layers, s.selector, s.probe_keep)
        protocol, fit_enc, score_enc = self.selection_sets()
        sel = Selection(protocol, [], len(fit_enc), None if s.selector == "gradient" else len(score_enc),
                        metric=s.selection_metric, selector=s.selector, threshold=s.equivalence_threshold,
                        requested_train_examples=s.selection_train_samples,
                        requested_score_examples=None if protocol == "validation" else s.selection_eval_samples,
                        rate_from=self.cfg.train.rate_from("olft"))  # fmt: skip
        if s.selector != "gradient":  # the yardstick of trained candidates (and of probes: `_Stages.proxy`)
            regression = self.task.num_labels == 1
            constants = {"mean" if regression else "class frequencies": constant_losses(fit_enc.labels, score_enc.labels, regression)}
            if not regression:  # the fit set's shares can do worse than even odds where the scoring set's differ
                constants["uniform"] = uniform_losses(len(score_enc), self.task.num_labels)
            predicts, losses = stronger_constant(constants)
            sel.record_baseline(losses, [], predicts)
        run = _Stages(self, sel, fit_enc, score_enc, on_candidate, done or {}, probed)
        steps = self.selection_steps(len(fit_enc))
        layers = candidates
        keep = auto_keep(len(candidates)) if s.selector == "auto" else s.probe_keep
        if s.selector in ("probe-halving", "auto"):
            sel.probe_keep = keep or None  # auto below 8 candidates: the probe decides, passing on nothing
        if s.selector in ("probe", "gradient", "probe-halving", "auto"):
            run.proxy("gradient" if s.selector == "gradient" else "probe", layers)
            layers = probe_finalists(sel.ranking(), keep) if s.selector == "probe-halving" or keep else []
            if s.selector == "probe-halving" and len(layers) < 2:
                # --probe-keep K is only advised where it is accepted: K below the number of candidates.
                fix = ("--probe-keep 2 or more trains the probe's best layers" if len(candidates) > 2
                       else "--selector halving or exhaustive trains every candidate")
                log.warning("probe-halving: the probe kept %d of %s (layer %s), so no layer is trained and the "
                            "choice is the probe's. %s.", len(layers), plural(len(candidates), "candidate"),
                            ", ".join(map(str, layers)), fix)  # fmt: skip
            if run.probe_round is not None and on_probe:  # a piece, before any finalist trains
                r = run.probe_round
                on_probe(probe_piece([c for c in sel.candidates if c.layer in r["layers"]], r["seconds"],
                                     sel.cpu_seconds, r["ranking"], layers))  # fmt: skip
        if s.selector == "exhaustive":
            run.train(layers, steps, "exhaustive")
        elif len(layers) > 1 or s.selector == "halving":  # halving, or its rungs after a probe's pruning
            for rung, (_, rung_steps) in enumerate(halving_schedule(len(layers), steps)):
                if rung:
                    layers = better_half(sel.ranking())
                run.train(layers, rung_steps, "halving")
        trained = sel.rounds[-1]["stage"] == "train"  # a proxy's ties are its own: it has no budget to raise
        # auto's training is sized to a cost bound: retraining tied finalists at twice the steps
        # would triple it, so auto reports them as equivalent instead.
        for _ in range(s.selection_adaptive if trained and s.selector != "auto" else 0):
            tied = sel.contenders()  # within noise of the winner, or clearly below it on loss
            if len(tied) < 2:
                break
            # Why these layers: the gaps they were judged on, which their retraining replaces in `gaps()`.
            gaps = sel.gaps()
            why = {"winner": sel.selected_layer, "threshold": sel.threshold,
                   "gaps": {str(layer): gap for layer, gap in gaps.items() if layer != sel.selected_layer},
                   # tied by the loss floor alone (`Selection.tied_in_practice`), however many standard errors apart
                   "loss_floor": sel.loss_floor(),
                   "floor_tied": [k for k in sorted(sel.tied_in_practice()) if gaps[k] is not None and abs(gaps[k]) >= sel.threshold]}  # fmt: skip
            steps *= 2  # the top candidates are within noise: spend more on them alone
            run.train(tied, steps, sel.rounds[-1]["selector"])  # the stage whose finalists it retrains
            sel.rounds[-1]["retrained"] = why
        by_layer = {c.layer: c for c in sel.candidates}
        sel.candidates = [by_layer[layer] for layer in candidates]
        return sel

    def selection_steps(self, fit_examples: int) -> int:
        """Optimizer steps per candidate: --selection-steps, else --selection-epochs over the fit set."""
        s, t = self.cfg.selection, self.cfg.train
        steps = s.selection_steps or max(1, math.ceil(s.selection_epochs * math.ceil(fit_examples / t.batch_size)))
        return min(steps, s.selection_max_steps) if s.selection_max_steps else steps

    def _candidate(self, layer: int, steps: int, fit_enc: Encoded, score_enc: Encoded, caches: dict, alone: bool) -> Candidate:
        """Tune and score one candidate for `steps` optimizer steps (`alone`: no collectives)."""
        fault_point(f"candidate{layer}")
        t0, cpu0 = time.perf_counter(), time.process_time()
        caches = {name: c for name, c in caches.items() if c.layer <= layer}  # below the cache: plain forward
        with precision.autocast(self.stack, self.dist):
            for cache in caches.values():
                cache.advance(self.stack, layer)
        try:
            r = self.tune(
                [layer], fit_enc, {"score": score_enc}, epochs=1.0, max_steps=steps, desc=f"candidate {layer}",
                caches=caches, dist=self.dist.alone() if alone else self.dist, loss_splits=("score",),
                lr=self.cfg.train.lr_for("olft"),  # candidates are tuned as OLFT will tune the winner
                rate_from=self.cfg.train.rate_from("olft"),
            )  # fmt: skip
            losses = example_losses(r.logits["score"], score_enc.labels)
            return Candidate(layer, r.score, time.perf_counter() - t0, r.metrics["score"], steps=r.steps,
                             example_losses=losses, cpu_seconds=time.process_time() - cpu0,
                             one_class=r.one_class.get("score"),
                             undefined=(r.undefined.get("score") or {}).get(self.task.metric))  # fmt: skip
        except NonFiniteLoss as exc:
            log.error("candidate layer %d failed: %s", layer, exc)
            return Candidate(layer, None, time.perf_counter() - t0, error=str(exc), steps=steps,
                             cpu_seconds=time.process_time() - cpu0)  # fmt: skip


def draw_selection_examples(train_examples: list, s: SelectionConfig, seed: int) -> tuple[list, list | None]:
    """(fit, score) training examples of a selection, as `SelectionMixin.selection_sets` draws them with
    `seed`: under --selection-data validation (any selector but gradient, which scores nothing) the
    candidates fit on --selection-train-samples of them and score is None (the validation split
    scores them); else two disjoint sets (`tasks.disjoint_subsets`)."""
    if s.selection_data == "validation" and s.selector != "gradient":
        return tasks.sample_split(train_examples, s.selection_train_samples, seed), None
    fit, score = tasks.disjoint_subsets(train_examples, [s.selection_train_samples, s.selection_eval_samples], seed)
    return fit, score


# The selectors that fit the linear probe (`_Stages.proxy`) on the fit set.
PROBE_SELECTORS = ("probe", "probe-halving", "auto")


def check_probe_classes(session: Session, n_candidates: int) -> None:
    """Refuse (OlftError), before anything trains, a selection whose probe (`PROBE_SELECTORS`, more
    than one candidate, a classification task) would fit on a set holding one class only: the set
    `selection_sets` draws with --seed (`draw_selection_examples`). The probe's own check
    (`_Stages.proxy`) would otherwise fail it mid-run, after any baseline strategy trained."""
    s = session.cfg.selection
    if n_candidates < 2 or s.selector not in PROBE_SELECTORS or session.task.num_labels == 1:
        return
    fit, _ = draw_selection_examples(session.train_examples, s, session.cfg.train.seed)
    classes = {e.label for e in fit}
    if len(classes) != 1:  # none: nothing drawn (`check_selection_data` refused that first)
        return
    label, names = next(iter(classes)), session.task.labels
    label = f"'{names[label]}'" if names and isinstance(label, int) and 0 <= label < len(names) else label
    raise tasks.OlftError(f"selection: the probe's fit set ({plural(len(fit), 'training example')} drawn with --seed "
                          f"{session.cfg.train.seed}) holds one class only (every one is {label}), so the probe cannot "
                          f"rank the {n_candidates} candidates: {_probe_fit_limit(session, len(fit))}; or use another "
                          "--seed; or another --selector (halving, exhaustive); or name one layer with --candidates "
                          "(nothing to select).")  # fmt: skip


# Fewer scoring examples than this and one example moves accuracy by 5 points or more: warned about.
SMALL_SCORING_SET = 20

# Fewer examples than this in either selection set (fit or score) and no difference between candidates
# can be measured: a paired gap (`select.paired_gap`) needs a spread, so 2 scoring examples at least; a
# candidate fit on one example has learned that example. Refused (`check_selection_data`).
MIN_SELECTION_SET = 2


def selection_set_sizes(n_train: int, s: SelectionConfig) -> tuple[int, int]:
    """(fit, score) examples --selection-data train gives the candidates from `n_train` training
    examples, as `selection_sets` draws them (`tasks.disjoint_subsets`: shrunk in proportion when
    the split is smaller than both asked for); (n_train, 0) below 2 examples, where it can draw none."""
    if n_train < 2:
        return n_train, 0
    sizes = [s.selection_train_samples, s.selection_eval_samples]
    fit, score = shrink_sizes(sizes, n_train) if sum(sizes) > n_train else sizes
    return fit, score


def check_selection_data(s: SelectionConfig, n_train: int, n_candidates: int, max_train_samples: int | None,
                         validation: tuple[str, int, int | None] | None = None) -> None:
    """Refuse (OlftError), before anything trains, a selection that will run (more than one candidate,
    a selector that scores held-out examples) whose fit or scoring set would hold fewer than
    `MIN_SELECTION_SET` examples: of the `n_train` training examples under --selection-data train;
    under --selection-data validation, of the training examples it fits on (--selection-train-samples
    of them) or of the validation split it scores on, `validation` = (split name, its examples after
    --max-eval-samples, that cap or None). No difference between the candidates could be measured,
    and a choice made on one example would read as a finding. The message names the settings that fix it."""
    capped = max_train_samples is not None and n_train == max_train_samples  # else the split is what limits
    split = (f"--max-train-samples {max_train_samples} leaves {plural(n_train, 'training example')}" if capped else
             f"the training split holds {plural(n_train, 'example')}")
    if n_candidates >= 2 and s.selector == "gradient" and n_train < MIN_SELECTION_SET:
        # it scores nothing, but draws its gradient batches from a set split off the training examples
        fixes = (f"raise --max-train-samples to {MIN_SELECTION_SET} or more" if capped
                 else f"use a training split of {MIN_SELECTION_SET} examples or more")
        raise tasks.OlftError(f"selection: {split}, too few for the gradient selector to draw its selection set from "
                              f"(it needs {MIN_SELECTION_SET} or more). {_sentence(fixes)}; or name one layer with "
                              "--candidates (nothing to select).")
    if n_candidates < 2 or s.selector == "gradient":
        return
    if s.selection_data != "train":
        _check_validation_selection(s, n_train, n_candidates, max_train_samples, validation)
        return
    fit, score = selection_set_sizes(n_train, s)
    if min(fit, score) >= MIN_SELECTION_SET:
        return
    drawn = (f"which --selection-data train splits into {fit} to fit the candidates on and {score} to score them on"
             if n_train >= 2 else "too few to split into a set to fit the candidates on and one to score them on")
    raise tasks.OlftError(f"selection: {split}, {drawn}: with fewer than {MIN_SELECTION_SET} in either, no difference "
                          f"between the {n_candidates} candidates can be measured and the choice would be a guess. "
                          f"{_sentence('; or '.join(_train_selection_fixes(s, n_train, capped)))}.")  # fmt: skip


def _works(n_train: int, s: SelectionConfig) -> bool:
    return min(selection_set_sizes(n_train, s)) >= MIN_SELECTION_SET


def _train_selection_fixes(s: SelectionConfig, n_train: int, capped: bool) -> list[str]:
    """The fixes `check_selection_data` offers when --selection-data train's sets of `n_train` examples
    (`capped`: as many as --max-train-samples) are too small, each one that would work: raising
    --selection-train/eval-samples only where the training examples can then give both sets enough
    (the split shrinks both in proportion, so 1,000 + 2 of 96 still score on 1), else more training
    examples, with those raised too where they are below MIN_SELECTION_SET."""
    names = ("selection_train_samples", "selection_eval_samples")
    small = [name for name in names if getattr(s, name) < MIN_SELECTION_SET]
    raised = replace(s, **{name: MIN_SELECTION_SET for name in small})
    flags = " and ".join(f"--{name.replace('_', '-')} {getattr(s, name)}" for name in small)
    fixes = []
    if len(small) == 1:  # the fewest that works; past the other's value the other's share only shrinks
        other = getattr(s, next(n for n in names if n not in small))
        value = next((v for v in range(MIN_SELECTION_SET, max(other, MIN_SELECTION_SET) + 1)
                      if _works(n_train, replace(s, **{small[0]: v}))), None)  # fmt: skip
        if value is not None:
            fixes.append(f"raise {flags} to {value}")
    elif small and _works(n_train, raised):
        fixes.append(f"raise {flags} to {MIN_SELECTION_SET}")
    if not fixes:  # more training examples: with the settings below MIN_SELECTION_SET raised to it
        need = next(n for n in range(2 * MIN_SELECTION_SET, raised.selection_train_samples + raised.selection_eval_samples + 1)
                    if _works(n, raised))  # fmt: skip
        more = f"raise --max-train-samples to {need} or more" if capped else f"use a training split of {need} examples or more"
        kept = [f"--{name.replace('_', '-')} {getattr(s, name)}" for name in names if name not in small]
        at = f" and {'' if capped else 'raise '}{flags} to {MIN_SELECTION_SET}" if small else ""
        at += f" at the current {' and '.join(kept)}" if kept else ""
        fewest = (f" (or {'to' if capped else 'of'} {2 * MIN_SELECTION_SET} with --selection-train-samples {MIN_SELECTION_SET} "
                  f"--selection-eval-samples {MIN_SELECTION_SET})" if need > 2 * MIN_SELECTION_SET else "")
        fixes.append(f"{more}{at}{fewest}")
        if 2 * MIN_SELECTION_SET <= n_train:
            fixes.append(f"split these {n_train} with --selection-train-samples {n_train - MIN_SELECTION_SET} "
                         f"--selection-eval-samples {MIN_SELECTION_SET}")
    if n_train >= MIN_SELECTION_SET:
        fixes.append("use --selection-data validation (the candidates are then scored on the validation split)")
    fixes.append("name one layer with --candidates (nothing to select)")
    return fixes


def _check_validation_selection(s: SelectionConfig, n_train: int, n_candidates: int, max_train_samples: int | None,
                                validation: tuple[str, int, int | None] | None) -> None:
    """`check_selection_data` under --selection-data validation: the candidates fit on
    min(--selection-train-samples, n_train) training examples and are scored on the validation
    split (`SelectionMixin.selection_sets`); OlftError when either holds under `MIN_SELECTION_SET`."""
    fit = min(s.selection_train_samples, n_train)
    problems, fixes = [], []
    if fit < MIN_SELECTION_SET:
        # Each limit below MIN_SELECTION_SET must rise: raising one alone leaves the other's.
        limits = [f"--selection-train-samples {s.selection_train_samples}"] if s.selection_train_samples < MIN_SELECTION_SET else []
        if n_train < MIN_SELECTION_SET:
            capped = max_train_samples is not None and n_train == max_train_samples
            limits.append(f"--max-train-samples {max_train_samples}" if capped else "the training split")
        raised = " and ".join(limit for limit in limits if limit.startswith("--"))
        problems.append(f"{' and '.join(limits)} {'leave' if len(limits) > 1 else 'leaves'} the candidates "
                        f"{plural(fit, 'training example')} to fit on")
        fix = [f"raise {raised} to {MIN_SELECTION_SET} or more"] if raised else []
        if "the training split" in limits:
            fix.append(f"use a training split of {MIN_SELECTION_SET} examples or more")
        fixes.append(" and ".join(fix))
    if validation is not None and validation[1] < MIN_SELECTION_SET:
        split, n, cap = validation
        limit = f"--max-eval-samples {cap}" if cap is not None and n >= cap else f"the {split} split"
        problems.append(f"{limit} leaves {plural(n, f'{split} example')} to score them on")
        fixes.append(f"raise --max-eval-samples to {MIN_SELECTION_SET} or more" if limit.startswith("--")
                     else f"use a {split} split of {MIN_SELECTION_SET} examples or more")
        if n_train >= 2 * MIN_SELECTION_SET:
            fixes.append("use --selection-data train (the candidates are then scored on held-out training examples)")
    if not problems:
        return
    fixes.append("name one layer with --candidates (nothing to select)")
    raise tasks.OlftError(f"selection (--selection-data validation): {' and '.join(problems)}: with fewer than "
                          f"{MIN_SELECTION_SET}, no difference between the {n_candidates} candidates can be measured and "
                          f"the choice would be a guess. {_sentence('; or '.join(fixes))}.")


def _probe_fit_limit(session: Session, n_fit: int) -> str:
    """The advice for a probe fit set of `n_fit` examples holding one class, naming the setting that
    limits it: --selection-train-samples, or --max-train-samples (or the split) when the training
    examples ran out first."""
    asked, cap = session.cfg.selection.selection_train_samples, session.cfg.data.max_train_samples
    if n_fit >= asked:
        return f"raise --selection-train-samples (now {asked})"
    if cap is not None and len(session.train_examples) >= cap:
        return (f"raise --max-train-samples (now {cap}; it leaves {plural(n_fit, 'fit example')}, under the "
                f"{asked} --selection-train-samples asks for)")
    return (f"the training split leaves only {plural(n_fit, 'fit example')} of the {asked} --selection-train-samples "
            "asks for: use a larger training split")


def _sentence(text: str) -> str:
    """`text` with its first letter upper-case (str.capitalize would lower the rest)."""
    return text[:1].upper() + text[1:]


def _warn_small_scoring_set(n: int, limit: str, metric: str = "accuracy") -> None:
    """Warn, at the selection's start, when the candidates will be scored on fewer than
    `SMALL_SCORING_SET` examples, naming `limit`, the setting that limits that set, and `metric`,
    the task's headline metric: accuracy moves by 100/n points an example; a correlation (or F1)
    has no such per-example unit, so it is only said to swing."""
    if n < SMALL_SCORING_SET:
        moves = (f"one example moves their accuracy by {100 / max(n, 1):.1f} points" if metric == "accuracy"
                 else f"one example can swing their {metric} widely")
        log.warning("selection: the candidates are scored on only %d examples (under %d): %s, so their differences "
                    "are mostly noise. What limits the scoring set: %s.", n, SMALL_SCORING_SET, moves, limit)  # fmt: skip


class _Stages:
    """The stages of one selection, each adding its candidates' numbers to `sel`.

    The latest stage of a layer replaces its numbers in `sel.candidates`, and `sel.finalists`
    is the latest stage's layers: the winner is chosen among them, compared on equal budgets.
    """

    def __init__(self, session: Session, sel: Selection, fit_enc: Encoded, score_enc: Encoded, on_candidate, done,
                 probed: dict | None = None):
        self.session, self.sel, self.fit_enc, self.score_enc = session, sel, fit_enc, score_enc
        self.on_candidate, self.done, self.probed = on_candidate, done, probed
        self.probe_round: dict | None = None  # the round of a probe stage this run computed (None: none, or reused)

    def _record(self, kind: str, selector: str, steps: int, cands: list[Candidate], seconds: float,
                cpu_seconds: float | None, cache_seconds: float = 0.0) -> None:
        """Add a round: the stage `kind` (probe, gradient or train) that `selector` ran on `cands`."""
        by_layer = {c.layer: c for c in self.sel.candidates}
        by_layer.update({c.layer: with_probe(c, by_layer.get(c.layer)) for c in cands})
        self.sel.candidates = sorted(by_layer.values(), key=lambda c: c.layer)
        self.sel.finalists = sorted(c.layer for c in cands)
        self.sel.seconds += seconds
        if self.sel.cpu_seconds is not None:  # one stage without CPU time leaves the total unknown, not short
            self.sel.cpu_seconds = None if cpu_seconds is None else self.sel.cpu_seconds + cpu_seconds
        self.sel.cache_seconds += cache_seconds
        self.sel.rounds.append({
            "stage": kind, "selector": selector, "steps": steps, "layers": self.sel.finalists, "seconds": seconds,
            "ranking": self.sel.ranking() if any(c.score is not None for c in cands) else [],
            # Each stage's own scores: a later stage replaces a layer's numbers in `candidates`,
            # so the probe's scores of the layers it passed on live only here.
            "scores": {c.layer: c.score for c in cands},
            # and its losses (held-out; a proxy's own where it has one): a retrained layer's first-round
            # loss would otherwise be lost with its replaced numbers
            "losses": {c.layer: c.metrics.get("loss") for c in cands},
        })  # fmt: skip

    def proxy(self, kind: str, layers: list[int]) -> None:
        """Score `layers` with a proxy (no training run per candidate)."""
        session = self.session
        cfg = session.cfg
        saved = self.probed if kind == "probe" else None
        if saved and [c.get("layer") for c in saved.get("candidates") or []] == list(layers):
            # An earlier run's probe of these layers (same config and data: `RunFolder` checks both)
            cands = [Candidate(**c) for c in saved["candidates"]]
            self.sel.measure_probes(cands)
            self._record(kind, kind, 0, cands, saved["seconds"], saved["cpu_seconds"])
            log.info("probe of %s kept from the run folder", plural(len(cands), "candidate"))
            return
        t0, cpu0 = time.perf_counter(), time.process_time()
        with precision.autocast(session.stack, session.dist):
            if kind == "probe":
                regression = session.task.num_labels == 1
                bs = cfg.train.eval_batch_size
                if not regression and len(set(self.fit_enc.labels)) < 2:
                    raise tasks.OlftError(f"The probe's fit set holds one class only: {_probe_fit_limit(session, len(self.fit_enc.labels))}.")
                fit_x = layer_features(session.stack, self.fit_enc, layers, bs)
                score_x = layer_features(session.stack, self.score_enc, layers, bs)
                cands = []
                for layer in layers:
                    score, metrics, losses = probe_scores(fit_x[layer], self.fit_enc.labels, score_x[layer],
                                                          self.score_enc.labels, regression)  # fmt: skip
                    cands.append(Candidate(layer, score, 0.0, metrics, steps=0, example_losses=losses))
                # A probe is only worth its ranking if it beats a constant on the same examples (recorded
                # by `select` before any stage, for every selector that scores held-out examples).
                self.sel.measure_probes(cands)
            else:
                grads = gradient_scores(session.stack, self.fit_enc, layers, cfg.method, batch_size=cfg.train.batch_size,
                                        batches=cfg.selection.gradient_batches, seed=cfg.train.seed)  # fmt: skip
                cands = [Candidate(layer, grads[layer]["rgn"], 0.0, grads[layer], steps=0) for layer in layers]
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        for c in cands:
            c.seconds, c.cpu_seconds = seconds / len(cands), cpu / len(cands)
        self._record(kind, kind, 0, cands, seconds, cpu)  # a proxy is its own selector
        if kind == "probe":
            self.probe_round = self.sel.rounds[-1]
        if kind == "gradient":  # what it used: training batches at initialisation, no held-out examples
            self.sel.rounds[-1].update(batch_size=cfg.train.batch_size,
                                        batches=min(cfg.selection.gradient_batches, math.ceil(len(self.fit_enc) / cfg.train.batch_size)))

    def train(self, layers: list[int], steps: int, selector: str) -> None:
        """Tune and score each of `layers` for `steps` steps, a round of `selector` (exhaustive, or a
        halving rung); W candidates at a time over W processes."""
        session = self.session
        s, dist = session.cfg.selection, session.dist
        layers = sorted(layers)  # the shared cache only climbs
        todo = [layer for layer in layers if (layer, steps) not in self.done]
        split = dist.world_size > 1 and s.selection_parallel == "candidates"
        width, rank = (dist.world_size, dist.rank) if split else (1, 0)
        mine = todo[rank::width]  # each process's cache climbs through its own candidates only
        t0, cpu0 = time.perf_counter(), time.process_time()
        encs = {"train": self.fit_enc, "score": self.score_enc}
        caches = session.build_caches(cache_layer(mine), encs) if mine else {}
        cache_seconds, cache_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        finished = {layer: self.done[(layer, steps)] for layer in layers if (layer, steps) in self.done}
        before = {c.layer: c for c in self.sel.candidates}
        for start in range(0, len(todo), width):
            group = todo[start : start + width]
            mine_now = group[rank] if rank < len(group) else None
            cand = None if mine_now is None else session._candidate(mine_now, steps, self.fit_enc, self.score_enc, caches, split)
            for c in dist.gather(cand) if split else [cand]:
                if c is not None:
                    c = with_probe(c, before.get(c.layer))  # its piece (and an unfinished selection) shows the probe's too
                    finished[c.layer] = c
                    if self.on_candidate:
                        self.on_candidate(c)
        cache_seconds = max(dist.gather(cache_seconds)) if split else cache_seconds
        cache_cpu = sum(dist.gather(cache_cpu)) if split else cache_cpu  # work: every process built its own cache
        cands = [finished[layer] for layer in layers]
        cpu = None if any(c.cpu_seconds is None for c in cands) else cache_cpu + sum(c.cpu_seconds for c in cands)
        self._record("train", selector, steps, cands, cache_seconds + sum(c.seconds for c in cands), cpu, cache_seconds)


def with_probe(new: Candidate, old: Candidate | None) -> Candidate:
    """`new`, a layer's numbers from a later stage, keeping the probe's numbers of `old` (its
    previous stage): the probe's score and metrics when `old` is the probe's (0 steps), else what
    `old` kept. A trained candidate's entry then shows both, not only `rounds`."""
    if old is None or not new.steps:
        return new
    probe = old.probe if old.steps else {"score": old.score, "metrics": dict(old.metrics)}
    return new if probe is None else replace(new, probe=probe)


def example_losses(logits, labels) -> list[float]:
    """Per-example training loss (cross-entropy, or squared error for regression) of (n, k) logits."""
    values = torch.as_tensor(logits, dtype=torch.float32)
    if values.shape[-1] == 1:
        golds = torch.as_tensor(labels, dtype=torch.float32)
        return ((values[:, 0] - golds) ** 2).tolist()
    golds = torch.as_tensor(labels, dtype=torch.long)
    return torch.nn.functional.cross_entropy(values, golds, reduction="none").tolist()


def cache_layer(candidates: list[int]) -> int:
    """Where selection builds its one activation cache: the lowest non-zero candidate.

    Layer 0 reads the embeddings, so a cache at 0 holds nothing to reuse; built higher, it serves
    every later candidate (advanced layer by layer), while layer 0 runs the plain forward. 0 when
    layer 0 is the only candidate (then no cache).
    """
    return min((c for c in candidates if c > 0), default=0)
