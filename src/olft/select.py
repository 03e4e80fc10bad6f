"""Selectors and the selection record: ranking, confidence, equivalence, halving's schedule.

The candidates are layer numbers (`olft.layerspec`: the paper's middle bucket by default). A
selector (`SELECTORS`; run by `Session.select`) ranks them:
`exhaustive` tunes each alone for the selection budget and scores it on held-out examples (the
paper's procedure); `halving` does so in rungs that keep the better half (`halving_schedule`);
`probe` and `gradient` (`olft.proxies`) train nothing; `probe-halving` prunes by the probe first
(to its better half, or `probe_keep` layers: `probe_finalists`); `auto` is probe-halving that
keeps `auto_keep` layers, and the probe alone on fewer than 8 candidates. Trained candidates rank by score
with the held-out loss breaking ties (accuracy on a few hundred examples ties often, losses
rarely), then the lower layer; `selection_metric="loss"` ranks by loss alone. `Selection` also
says how sure the choice is (`confidence`, `equivalent`); what a report says of that in words
is `olft.verdicts`.

Protocols:
- "train" (default): candidates train on one subset of the train split and are scored on a
  disjoint subset of the train split, so validation data never influences the choice.
- "validation": the paper's protocol, scoring candidates on the validation split the final
  result is reported on.
- "training-batches": the gradient selector's, whatever --selection-data says: it scores no
  examples, only sums the gradients of training batches. Results say which protocol was used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from olft.errors import OlftError

SELECTORS = ("exhaustive", "halving", "probe", "gradient", "probe-halving", "auto")
# `auto` trains the probe's top N // AUTO_SHARE of N candidates: probe-keep-k costs about the probe
# (3-4 %) plus k/N of exhaustive, so a quarter keeps it under the 30 % the selection benchmark
# bounds a default's cost at (docs/selection.md).
AUTO_SHARE = 4
# The smallest difference in mean held-out loss that counts as a difference at all, as a share of the
# constant predictor's loss (`Selection.loss_floor`): 0.1 %, about 0.0007 nats on a binary task (ln 2)
# and 0.0011 on a 3-class one. Standard errors alone cannot say this: candidates that make nearly the
# same predictions (every one collapsed to the same class, say) have paired differences with almost no
# spread, so a gap of 1e-4 nats can span several standard errors while it moves no prediction. On 200
# scoring examples the floor is one example's right-class probability going from 0.5 to 0.57: far below
# anything accuracy can see. Relative, not in nats, so that a regression task's squared error (in the
# label's units squared, whatever their scale) gets the same practical yardstick.
MIN_LOSS_GAP = 1e-3


@dataclass
class Candidate:
    """One candidate layer's numbers from one selector stage.

    `score` is higher-is-better: the headline score on the scoring set for trained candidates,
    the proxy's own score for proxies. `metrics["loss"]` (lower is better) is the held-out loss
    when there is one; `example_losses` (one per scoring example, same order for every candidate)
    give the paired standard error behind `Selection.confidence`. `steps`: optimizer steps it
    trained for (0 for a proxy). `seconds`: wall seconds of tuning and scoring it; `cpu_seconds`:
    CPU seconds of the process that did so over the same span (None in pieces from before olft
    recorded it).
    """

    layer: int
    score: float | None
    seconds: float
    metrics: dict = field(default_factory=dict)
    error: str | None = None
    steps: int | None = None
    example_losses: list[float] | None = None
    cpu_seconds: float | None = None
    # A trained candidate that a probe scored first (probe-halving, auto): the probe's score and
    # metrics, kept beside the trained ones that replace them (None: no probe scored it first).
    probe: dict | None = None
    # The one class a trained candidate predicted for every scoring example (the collapse
    # `olft.pipeline.one_class_of` flags in finished strategies too), else None: such a candidate
    # answers a constant, so it is no signal however its loss compares with the constant predictor's.
    one_class: str | None = None
    # Why the task's headline metric has no value on the scoring set (`tasks.score`: a correlation
    # with labels of one value), else None: `score` is then its stand-in 0.0, shown "undefined §".
    undefined: str | None = None


# The gradient selector's protocol: it scores no examples (held-out or validation), it sums training batches' gradients.
GRADIENT_PROTOCOL = "training-batches"


@dataclass
class Selection:
    protocol: str  # "train-holdout", "validation" or GRADIENT_PROTOCOL
    candidates: list[Candidate]
    train_examples: int
    score_examples: int | None  # None: nothing was scored (the gradient selector)
    seconds: float = 0.0
    cache_seconds: float = 0.0
    # CPU seconds over the same work as `seconds` (with one torch thread: the work, whatever else the
    # machine ran); None when a candidate taken from an older run folder has none recorded.
    cpu_seconds: float | None = 0.0
    metric: str = "score"  # what ranks the candidates: "score" (higher wins, loss breaks ties) or "loss"
    selector: str = "exhaustive"
    finalists: list[int] | None = None  # layers the winner is chosen from (None: every candidate)
    rounds: list[dict] = field(default_factory=list)  # each stage: stage, selector that ran it, steps, layers, values
    threshold: float = 1.0  # standard errors under which the runner-up counts as equivalent
    # probe-halving: layers the probe passed on (None: its better half); auto: None when the probe alone decides
    probe_keep: int | None = None
    # --selection-train-samples as asked (None in older records): above train_examples, the
    # training split (after --max-train-samples) capped the fit set, which more of it cannot lift
    requested_train_examples: int | None = None
    # --selection-eval-samples as asked under the train protocol (None otherwise, and in older
    # records): above score_examples, the training split capped the scoring set as well
    requested_score_examples: int | None = None
    # The probe's yardstick (`record_baseline`): the held-out loss of a constant predictor, what it
    # predicts ("class frequencies", "uniform" or "mean"), and per probed layer how many standard errors of
    # the paired difference its probe's loss lies below that (None: no probe ran).
    baseline_loss: float | None = None
    baseline_predicts: str | None = None
    baseline_gaps: dict[int, float | None] | None = None
    # The constant predictor's per-example losses: the yardstick of trained finalists too (`trained_gaps`).
    baseline_losses: list[float] | None = field(default=None, repr=False)
    # The strategy whose --strategy-lr entry set the candidates' rate (olft; None: --lr), which the fix
    # names where every candidate failed (`_ranked`) or diverged (`verdicts.trained_no_signal_text`, which
    # reads results.json's record of it; older records have none: --lr).
    rate_from: str | None = field(default=None, repr=False)
    # Per probed layer, how far (mean loss) its probe's held-out loss lies below the constant's (`measure_probes`).
    baseline_drops: dict[int, float | None] | None = field(default=None, repr=False)

    def record_baseline(self, losses: list[float], probed: list[Candidate], predicts: str) -> None:
        """Keep the constant predictor's per-example `losses` (`olft.proxies.stronger_constant`: the
        fit set's class frequencies or even odds, whichever loses less; the mean on regression) as
        the yardstick of the `probed` candidates (none: only trained ones are measured against it,
        `trained_gaps`), scored on the same examples in the same order."""
        self.baseline_loss = float(np.mean(losses))
        self.baseline_predicts = predicts
        self.baseline_losses = list(losses)
        self.measure_probes(probed)

    def measure_probes(self, probed: list[Candidate]) -> None:
        """`baseline_gaps` of the `probed` candidates against the recorded constant predictor (none
        probed: None), paired per example on the scoring set both were scored on."""
        self.baseline_gaps = {c.layer: paired_gap(c.example_losses, self.baseline_losses) for c in probed} if probed else None
        self.baseline_drops = {c.layer: mean_gap(c.example_losses, self.baseline_losses) for c in probed} if probed else None

    def loss_floor(self) -> float:
        """The smallest difference in mean held-out loss (nats, or squared error on regression) that
        counts as one: `MIN_LOSS_GAP` of the constant predictor's loss; 0 where none was recorded
        (the gradient selector measures no loss gap anyway)."""
        return MIN_LOSS_GAP * self.baseline_loss if self.baseline_loss else 0.0

    def _trained_finalists(self) -> list[Candidate] | None:
        """The finalists of the last stage when it trained (None: a proxy chose, or no baseline)."""
        if self.baseline_losses is None or not self.rounds or self.rounds[-1].get("stage") != "train":
            return None
        keep = self.finalists
        return [c for c in self.candidates if c.score is not None and (keep is None or c.layer in keep)]

    def trained_gaps(self) -> dict[int, float | None] | None:
        """Trained finalist -> how many standard errors of the paired per-example difference its
        held-out loss lies below the constant predictor's (negative: above). None when the last
        stage trained nothing (a proxy chose) or no baseline was recorded."""
        finalists = self._trained_finalists()
        return None if finalists is None else {c.layer: paired_gap(c.example_losses, self.baseline_losses) for c in finalists}

    @property
    def trained_no_signal(self) -> bool | None:
        """True when no trained finalist beats the constant predictor (`_beats`: its held-out loss
        below the constant's by `threshold` standard errors, paired per example, and by the
        `loss_floor`) while predicting more than one class (`Candidate.one_class`): the trained
        candidates learned nothing a constant does not, so the choice among them is a guess.
        None when nothing trained chose, or no gap could be measured."""
        gaps = self.trained_gaps()
        if not gaps or all(gap is None for gap in gaps.values()):
            return None
        return not any(c.one_class is None and self._beats(gaps[c.layer], mean_gap(c.example_losses, self.baseline_losses))
                       for c in self._trained_finalists())  # fmt: skip

    def beats_baseline(self) -> dict[int, bool] | None:
        """Probed layer -> whether its probe's held-out loss is below the constant baseline's by
        `threshold` standard errors or more (the noise `equivalent` uses), and strictly below
        even at threshold 0. None when no probe ran."""
        if self.baseline_gaps is None:
            return None
        drops = self.baseline_drops or {}
        return {layer: self._beats(gap, drops.get(layer)) for layer, gap in self.baseline_gaps.items()}

    def _beats(self, gap: float | None, drop: float | None) -> bool:
        """Whether a loss `gap` standard errors below the constant predictor's, and `drop` below it
        in mean loss, beats it: by `threshold` standard errors or more (the noise `equivalent` uses),
        strictly below even at threshold 0, and by the `loss_floor` or more (a drop too small to
        matter is none, however many standard errors it spans). A `drop` of None (older records)
        is judged on the gap alone."""
        return gap is not None and gap > 0 and gap >= self.threshold and (drop is None or drop >= self.loss_floor())

    @property
    def no_signal(self) -> bool | None:
        """True when no probed layer beats the constant baseline (`beats_baseline`): the probe's
        ranking is then noise, and a choice (or pruning) made by it a guess. None when no probe ran."""
        beats = self.beats_baseline()
        return None if beats is None else not any(beats.values())

    def _ranked(self) -> dict[int, tuple[float, float]]:
        """Layer -> ranking key, higher is better, over the finalists that trained.

        By score, the held-out loss breaks ties (accuracy on a few hundred examples ties often,
        losses rarely); by loss, the loss alone.
        """
        keep = self.finalists
        scored = [c for c in self.candidates if c.score is not None and (keep is None or c.layer in keep)]
        if not scored:
            fix = "Try a lower --lr" if self.rate_from is None else f"Lower {self.rate_from}'s rate in --strategy-lr"
            raise OlftError("Every candidate layer trained for the selection failed to train (each one's error is in "
                            f"results.json's selection and in table.md). {fix}.")
        if self.metric == "score":
            return {c.layer: (c.score, -c.metrics.get("loss", 0.0)) for c in scored}
        missing = [c.layer for c in scored if "loss" not in c.metrics]
        if missing:
            # The gradient selector scores none (a new selection pairing it with loss is refused before it
            # starts: `config.check_selection_metric`); any other selector's candidate an older olft saved so.
            why = ("the gradient selector scores none (use --selection-metric score or another --selector)"
                   if self.selector == "gradient" else
                   "an older olft did not save it (--overwrite scores the candidates again; or use --selection-metric score)")
            raise OlftError(f"Candidate layer {missing[0]} has no held-out loss to rank by --selection-metric loss: {why}.")
        return {c.layer: (-c.metrics["loss"], 0.0) for c in scored}

    def ranking(self) -> list[int]:
        """Finalist layers, best first (ties to the lower layer)."""
        ranked = self._ranked()
        return sorted(ranked, key=lambda layer: (tuple(-v for v in ranked[layer]), layer))

    @property
    def selected_layer(self) -> int:
        return self.ranking()[0]

    @property
    def flat(self) -> bool:
        """True when every finalist ranks the same: the choice is the tie-break alone. "The same"
        counts held-out losses within the `loss_floor` of the winner's as equal (`tied_in_practice`):
        candidates that all keep their initialisation differ by float rounding alone, and that
        rounding (which moves with the library version and thread count) is no ranking."""
        ranked = self._ranked()
        if len(ranked) < 2:
            return False
        if len(set(ranked.values())) == 1:
            return True
        same_score = self.metric != "score" or len({score for score, _ in ranked.values()}) == 1
        return same_score and set(ranked) - {self.selected_layer} <= set(self.tied_in_practice())

    def gaps(self) -> dict[int, float | None]:
        """Finalist -> how far its held-out loss lies above the winner's (negative: below), in
        standard errors of the paired per-example difference (0 for the winner; None without per-example losses)."""
        by_layer = {c.layer: c for c in self.candidates}
        best = by_layer[self.selected_layer]
        return {layer: paired_gap(best.example_losses, by_layer[layer].example_losses) for layer in self.ranking()}

    def tied_in_practice(self) -> list[int]:
        """Finalists (not the winner) whose mean held-out loss differs from the winner's by less than
        the `loss_floor`, either way: tied whatever their paired standard errors say (`MIN_LOSS_GAP`)."""
        by_layer = {c.layer: c for c in self.candidates}
        best, floor = by_layer[self.selected_layer], self.loss_floor()
        diffs = {layer: mean_gap(best.example_losses, by_layer[layer].example_losses) for layer in self.ranking()}
        return [layer for layer, d in diffs.items() if layer != self.selected_layer and d is not None and abs(d) < floor]

    @property
    def confidence(self) -> float | None:
        """Gap from the winner to the runner-up in standard errors. None with one finalist or no
        losses; where the probe chose the layer but found no signal (`no_signal`), or the trained
        finalists found none (`trained_no_signal`): the gap between candidates that all lose to a
        constant is noise, and a number would read as a measure of the choice; and where the
        runner-up's mean loss is within the `loss_floor` of the winner's (`tied_in_practice`): a
        tiny gap over a tinier spread is many standard errors of nothing. (A probe that only pruned
        leaves the trained stage's gap standing.)"""
        ranking = self.ranking()
        if len(ranking) < 2 or (self.no_signal and probe_decided({"rounds": self.rounds})) or self.trained_no_signal:
            return None
        return None if ranking[1] in self.tied_in_practice() else self.gaps()[ranking[1]]

    @property
    def equivalent(self) -> list[int]:
        """The winner and every finalist within `threshold` standard errors of it (the noise), on
        either side, or within the `loss_floor` of its mean loss (`tied_in_practice`): ranked by
        score, a runner-up may have the lower held-out loss, and one far lower is a clear
        difference, not a tie. The winner alone when the selector gives no per-example losses
        (no noise estimate)."""
        gaps, tied = self.gaps(), self.tied_in_practice()
        winner = self.selected_layer
        return [winner] + [layer for layer, gap in gaps.items()
                           if layer != winner and gap is not None and (abs(gap) < self.threshold or layer in tied)]  # fmt: skip

    def contenders(self) -> list[int]:
        """What --selection-adaptive retrains: the winner, the finalists `equivalent` to it, and any
        whose held-out loss is clearly *below* the winner's (score and loss disagree: ranked by score,
        the winner may be the worse of the two on loss). Leaving such a layer out would drop the one
        the loss says is best for being too good. Layers clearly above on loss are left out, unless
        within the `loss_floor` of the winner's (`tied_in_practice`: tied, so retrained too)."""
        gaps, tied = self.gaps(), self.tied_in_practice()
        winner = self.selected_layer
        return [winner] + [layer for layer, gap in gaps.items()
                           if layer != winner and gap is not None and (gap < self.threshold or layer in tied)]  # fmt: skip

    def measured(self) -> bool:
        """True when the gaps behind `equivalent` were measured: one finalist, or per-example
        losses for the winner and some other finalist. A gradient selector's are not."""
        gaps = self.gaps()
        return len(gaps) < 2 or any(gap is not None for layer, gap in gaps.items() if layer != self.selected_layer)

    def to_dict(self) -> dict:
        scored = any(c.score is not None for c in self.candidates)
        trained_gaps = self.trained_gaps()
        return {
            # `unfinished_entry` while candidates are still to train; "failed" when every candidate failed
            # to train (no score, no choice), so that no reader takes its null selected_layer for a choice.
            "status": "finished" if scored else "failed",
            "protocol": self.protocol,
            "selector": self.selector,
            "candidates": [{k: v for k, v in asdict(c).items() if k != "example_losses"} for c in self.candidates],
            "metric": self.metric,
            "selected_layer": self.selected_layer if scored else None,
            "ranking": self.ranking() if scored else None,
            "flat": self.flat if scored else None,
            "confidence": self.confidence if scored else None,
            # None where no gap was measured: `equivalent` would claim the winner alone stands apart
            "equivalent": self.equivalent if scored and self.measured() else None,
            # JSON keys are strings: the same dict before and after results.json
            "gaps": {str(layer): gap for layer, gap in self.gaps().items()} if scored else None,
            "equivalence_threshold": self.threshold,
            # the smallest mean-loss difference that counts (`loss_floor`); layers within it of the winner
            "loss_floor": self.loss_floor() if self.baseline_loss is not None else None,
            "tied_in_practice": self.tied_in_practice() if scored and self.baseline_loss is not None else None,
            "finalists": self.finalists,
            "probe_keep": self.probe_keep,
            "baseline_loss": self.baseline_loss,
            "baseline_predicts": self.baseline_predicts,
            "baseline_gaps": None if self.baseline_gaps is None else {str(k): v for k, v in self.baseline_gaps.items()},
            "beats_baseline": None if self.baseline_gaps is None else {str(k): v for k, v in self.beats_baseline().items()},
            "no_signal": self.no_signal,
            "trained_baseline_gaps": None if trained_gaps is None else {str(k): v for k, v in trained_gaps.items()},
            "trained_no_signal": self.trained_no_signal,
            "rounds": self.rounds,
            "seconds": self.seconds,
            "cache_seconds": self.cache_seconds,
            "cpu_seconds": self.cpu_seconds,
            "train_examples": self.train_examples,
            "requested_train_examples": self.requested_train_examples,
            "score_examples": self.score_examples,
            "requested_score_examples": self.requested_score_examples,
            "rate_from": self.rate_from,
        }


def unfinished_entry(candidates: list[dict], selection: dict, probe: dict | None = None) -> dict:
    """results.json's `selection` while a selection is unfinished (stopped, or still running): the
    candidates finished so far (`candidates`, their pieces as `Candidate` fields, per-example losses
    left out as in `Selection.to_dict`), sorted by steps then layer, under the `selection` section of
    the run's config. It claims nothing the finished candidates did not measure: no selected layer,
    ranking, confidence or equivalent layers (a candidate still to train may beat them all).

    `probe`: the probe stage's piece (`probe_piece`: probe-halving, auto, probe), once it finished.
    Its candidates are listed too (0 steps: the probe's own scores, as a finished selection lists
    the layers it did not pass on), and `probe` says what it ranked and passed on to training:
    {"ranking", "finalists"} (absent without a probe piece)."""
    probed = (probe or {}).get("candidates") or []
    entry = {
        "status": "unfinished",
        "protocol": (GRADIENT_PROTOCOL if selection.get("selector") == "gradient"
                     else "validation" if selection.get("selection_data") == "validation" else "train-holdout"),
        "selector": selection.get("selector"),
        "metric": selection.get("selection_metric", "score"),
        "candidates": sorted(({k: v for k, v in c.items() if k != "example_losses"} for c in [*probed, *candidates]),
                             key=lambda c: (c.get("steps") or 0, c["layer"])),
        "selected_layer": None,
        "ranking": None,
        "confidence": None,
        "equivalent": None,
    }
    if probe:
        entry["probe"] = {"ranking": probe.get("ranking"), "finalists": probe.get("finalists")}
    return entry


def probe_piece(probed: list[Candidate], seconds: float, cpu_seconds: float | None, ranking: list[int],
                finalists: list[int]) -> dict:
    """pieces/probe.json: the probe stage of a selection, saved once it finished. Every `probed`
    candidate's numbers (per-example losses kept: the baseline gaps and the probe's confidence are
    measured on them), the stage's wall and CPU seconds, its best-first `ranking`, and the
    `finalists` it passed on to training (none where the probe alone decides). A continued run
    takes the stage from it instead of probing again (`Session.select`), and an unfinished
    selection lists its scores (`unfinished_entry`)."""
    return {"candidates": [asdict(c) for c in probed], "seconds": seconds, "cpu_seconds": cpu_seconds,
            "ranking": list(ranking), "finalists": list(finalists)}


def unfinished(sel: dict | None) -> bool:
    """True when `sel` (results.json's `selection`) is `unfinished_entry`'s: candidates only, no choice."""
    return bool(sel) and sel.get("status") == "unfinished"


def finished_selection(results: dict) -> dict | None:
    """results.json's `selection` once the selection has finished with a choice; None while none ran,
    while it is unfinished, or when it failed (every candidate failed to train: `Selection.to_dict`)."""
    sel = results.get("selection")
    return None if not sel or unfinished(sel) or sel.get("status") == "failed" else sel


def probe_decided(sel: dict) -> bool:
    """True when the probe's ranking chose the layer of `sel` (a `Selection.to_dict`): its round was
    the last (`probe`, or `auto` below 8 candidates), not a pruning before trained ones."""
    return ((sel.get("rounds") or [{}])[-1]).get("stage") == "probe"


def paired_gap(best: list[float] | None, other: list[float] | None) -> float | None:
    """mean(other - best) / its standard error over the same examples; inf when they differ
    by a constant, 0 when identical, None without per-example losses."""
    if best is None or other is None or len(best) != len(other) or len(best) < 2:
        return None
    diff = np.asarray(other, dtype=np.float64) - np.asarray(best, dtype=np.float64)
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    if se == 0:
        return 0.0 if diff.mean() == 0 else math.copysign(math.inf, diff.mean())
    return float(diff.mean() / se)


def mean_gap(best: list[float] | None, other: list[float] | None) -> float | None:
    """mean(other - best) over the same examples (the loss units: nats, or squared error), the size
    `paired_gap` divides by its noise; None without per-example losses."""
    if best is None or other is None or len(best) != len(other) or not best:
        return None
    return float(np.mean(np.asarray(other, dtype=np.float64) - np.asarray(best, dtype=np.float64)))


def halving_schedule(num_candidates: int, steps: int) -> list[tuple[int, int]]:
    """Successive halving rungs as (candidates trained, steps each), last rung first-class.

    Each rung keeps the better half (rounded up) and doubles the steps; the last rung, with two
    candidates, trains each for `steps` (what exhaustive gives every candidate), so the winner
    has at least exhaustive's budget. One candidate: one rung of `steps`.
    """
    if num_candidates < 1 or steps < 1:
        raise OlftError(f"Halving needs at least one candidate and one step, got {num_candidates} and {steps}.")
    counts = [num_candidates]
    while counts[-1] > 2:
        counts.append(math.ceil(counts[-1] / 2))
    rungs = len(counts)
    return [(n, max(1, steps >> (rungs - 1 - r))) for r, n in enumerate(counts)]


def better_half(ranking: list[int]) -> list[int]:
    """The first ceil(n/2) of a best-first ranking (at least one), in layer order."""
    return sorted(ranking[: max(1, math.ceil(len(ranking) / 2))])


def auto_keep(n_candidates: int) -> int:
    """Layers the `auto` selector trains after the probe among `n_candidates` candidates:
    n // 4 (AUTO_SHARE) when that is 2 or more, else 0 (below 8 candidates the probe alone
    decides: training one layer would not change its choice, and two would cost more than 30 %
    of exhaustive's budget)."""
    keep = n_candidates // AUTO_SHARE
    return keep if keep >= 2 else 0


def probe_finalists(ranking: list[int], keep: int | None) -> list[int]:
    """What `probe-halving`'s probe passes on to trained halving, in layer order: the first `keep`
    of its best-first ranking (all of it if shorter), or the better half when `keep` is None."""
    return better_half(ranking) if keep is None else sorted(ranking[:keep])
