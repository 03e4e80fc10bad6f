"""Candidate layers, selectors, the selection record, and strategy names.

The paper's candidates are the model's middle bucket: split the N layers into three equal
buckets and take the middle one. A selector (`SELECTORS`; run by `Session.select`) ranks them:
`exhaustive` tunes each alone for the selection budget and scores it on held-out examples (the
paper's procedure); `halving` does so in rungs that keep the better half (`halving_schedule`);
`probe` and `gradient` (`olft.proxies`) train nothing; `probe-halving` prunes by the probe first
(to its better half, or `probe_keep` layers: `probe_finalists`); `auto` is probe-halving that
keeps `auto_keep` layers, and the probe alone on fewer than 8 candidates. Trained candidates rank by score
with the held-out loss breaking ties (accuracy on a few hundred examples ties often, losses
rarely), then the lower layer; `selection_metric="loss"` ranks by loss alone. `Selection` also
says how sure the choice is (`confidence`, `equivalent`).

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
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from olft.errors import OlftError


def middle_bucket(num_layers: int) -> list[int]:
    """0-based indices of the middle third: layers [N//3, N - N//3)."""
    if num_layers < 3:
        return list(range(num_layers))
    third = num_layers // 3
    return list(range(third, num_layers - third))


def read_layers(text: str, sep: str, shown: str) -> list[int] | None:
    """The layer numbers `text` lists, in the order written: numbers and inclusive ranges low-high
    (`4-9`), joined by `sep` or spaces. None when an item is neither; OlftError, quoting `shown`
    (what was typed), for an empty range or an empty entry (`3,,4`, `3,`). The one reader of
    --candidates, --layers and layers=.
    """
    text = re.sub(r"(?<=[0-9])\s*-\s*(?=[0-9])", "-", text.strip())  # "4 - 9" is the range 4-9
    items = re.split(rf"\s*{re.escape(sep)}\s*|\s+", text) if text else []
    if "" in items:  # "3,,4" or "3,": a layer left out while typing, not a list to guess at
        raise OlftError(f"'{shown}' has an empty entry (two '{sep}' in a row, or one at an end): "
                        f"list layers joined by one '{sep}', e.g. 3{sep}5.")
    layers: list[int] = []
    for item in items:
        if span := re.fullmatch(r"([0-9]+)-([0-9]+)", item):
            lo, hi = int(span[1]), int(span[2])
            if lo > hi:
                raise OlftError(f"The range {item} in '{shown}' is empty: write it low-high, e.g. {hi}-{lo}.")
            layers += range(lo, hi + 1)
        elif re.fullmatch(r"-?[0-9]+", item):
            layers.append(int(item))
        else:
            return None
    return layers or None


def check_range(layers: Sequence[int], num_layers: int, shown: str) -> None:
    """OlftError, quoting `shown` (what was typed), for a layer the model does not have."""
    bad = [i for i in layers if i < 0 or i >= num_layers]
    if bad:
        raise OlftError(f"Layer {bad[0]} in '{shown}' is out of range: this model has {num_layers} layers, "
                        f"numbered 0 to {num_layers - 1}. See `olft info`.")  # fmt: skip


def parse_candidates(spec: str, num_layers: int) -> list[int]:
    """'middle' | 'all' | layers and ranges, as `read_layers` reads them with ',' ('4-9', '3,5,7',
    '2-4,9') -> sorted layer indices (a layer given twice counts once). OlftError, quoting what was
    typed, for text that is none of these or a layer the model does not have (`check_range`)."""
    shown = f"--candidates {spec.strip()}"
    low = spec.strip().lower()
    if low == "middle":
        layers = middle_bucket(num_layers)
    elif low == "all":
        layers = list(range(num_layers))
    else:
        layers = read_layers(low, ",", shown)
        if layers is None:
            raise OlftError(f"Cannot read '{shown}': use middle, all, a range like 4-9, or a list like 3,5,7 "
                            "(or both: 2-4,9).")  # fmt: skip
        check_range(layers, num_layers, shown)
    return sorted(set(layers))


@dataclass(frozen=True)
class Strategy:
    """A named choice of layers: 'olft' (selected), 'final', 'full', or 'layers=I+J'."""

    name: str
    layers: tuple[int, ...] = ()


# How a list of layers is written: as a --strategies entry (layers=3+5) or to `olft train` (--layers 3,5).
LAYER_LISTS = {"layers=": ("layers=", "+"), "--layers": ("--layers ", ",")}


def parse_layers(text: str, option: str = "layers=", num_layers: int | None = None) -> tuple[int, ...]:
    """The layers `text` lists, sorted: `3+5` or `2-4` of a --strategies entry `layers=3+5`, or
    `3,5` or `2-4` of `olft train --layers 3,5` (option "--layers"); spaces separate them too
    (`read_layers`, as --candidates). OlftError, quoting what was written, for an entry that is no
    layer number or range, no layer at all, a layer given twice (it would tune once, under a name
    that lists it twice), or, given `num_layers`, a layer the model does not have.
    """
    lead, sep = LAYER_LISTS[option]
    shown = lead + text
    given = read_layers(text, sep, shown)
    if given is None:
        raise OlftError(f"Cannot read '{shown}': write layer numbers joined by '{sep}', e.g. {lead}3 or {lead}3{sep}5, "
                        f"or ranges low-high, e.g. {lead}2-4 (`olft info` lists the model's layers).")  # fmt: skip
    layers = tuple(sorted(set(given)))
    if len(layers) < len(given):  # a layer tunes once: 'layers=2+2' would name a strategy it is not
        twice = next(i for i in given if given.count(i) > 1)
        raise OlftError(f"Layer {twice} appears twice in '{shown}': give each layer once, e.g. {lead}{sep.join(map(str, layers))}.")
    if num_layers is not None:
        check_range(layers, num_layers, shown)
    return layers


def parse_strategies(spec: str, num_layers: int) -> list[Strategy]:
    """The strategies of a --strategies spec ('olft,final,layers=2+5') on a model of `num_layers`
    layers. Raises OlftError for an unknown strategy, a layer out of range or given twice, or no
    strategy at all."""
    out: list[Strategy] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        low = part.lower()
        if low == "olft":
            out.append(Strategy("olft"))
        elif low == "final":
            out.append(Strategy("final", (num_layers - 1,)))
        elif low in ("full", "all"):
            out.append(Strategy("full", tuple(range(num_layers))))
        elif low.startswith("layers="):
            layers = parse_layers(part[7:], "layers=", num_layers)
            out.append(Strategy("layers=" + "+".join(map(str, layers)), layers))
        else:
            raise OlftError(f"Unknown strategy '{part}': use olft, final, full or layers=I+J (or layers=I-J, a range).")
    if not out:
        raise OlftError("No strategy given: use --strategies olft,final,full (or a subset).")
    return out



SELECTORS = ("exhaustive", "halving", "probe", "gradient", "probe-halving", "auto")
# `auto` trains the probe's top N // AUTO_SHARE of N candidates: probe-keep-k costs about the probe
# (3-4 %) plus k/N of exhaustive, so a quarter keeps it under the 30 % the selection benchmark
# bounds a default's cost at (docs/selection.md).
AUTO_SHARE = 4


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
    rounds: list[dict] = field(default_factory=list)  # each stage: selector, steps, layers, values
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
    # predicts ("class frequencies" or "mean"), and per probed layer how many standard errors of
    # the paired difference its probe's loss lies below that (None: no probe ran).
    baseline_loss: float | None = None
    baseline_predicts: str | None = None
    baseline_gaps: dict[int, float | None] | None = None
    # The constant predictor's per-example losses: the yardstick of trained finalists too (`trained_gaps`).
    baseline_losses: list[float] | None = field(default=None, repr=False)

    def record_baseline(self, losses: list[float], probed: list[Candidate], predicts: str) -> None:
        """Keep the constant predictor's per-example `losses` (`olft.proxies.constant_losses`) as
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

    def trained_gaps(self) -> dict[int, float | None] | None:
        """Trained finalist -> how many standard errors of the paired per-example difference its
        held-out loss lies below the constant predictor's (negative: above). None when the last
        stage trained nothing (a proxy chose) or no baseline was recorded."""
        if self.baseline_losses is None or not self.rounds or self.rounds[-1].get("stage") != "train":
            return None
        keep = self.finalists
        return {c.layer: paired_gap(c.example_losses, self.baseline_losses) for c in self.candidates
                if c.score is not None and (keep is None or c.layer in keep)}  # fmt: skip

    @property
    def trained_no_signal(self) -> bool | None:
        """True when no trained finalist's held-out loss is below the constant predictor's by
        `threshold` standard errors (paired per example; strictly below at threshold 0): the
        trained candidates learned less than a constant, so the choice among them is a guess.
        None when nothing trained chose, or no gap could be measured."""
        gaps = self.trained_gaps()
        if not gaps or all(gap is None for gap in gaps.values()):
            return None
        return not any(self._beats(gap) for gap in gaps.values())

    def beats_baseline(self) -> dict[int, bool] | None:
        """Probed layer -> whether its probe's held-out loss is below the constant baseline's by
        `threshold` standard errors or more (the noise `equivalent` uses), and strictly below
        even at threshold 0. None when no probe ran."""
        if self.baseline_gaps is None:
            return None
        return {layer: self._beats(gap) for layer, gap in self.baseline_gaps.items()}

    def _beats(self, gap: float | None) -> bool:
        """Whether a loss `gap` standard errors below the constant predictor's beats it: by
        `threshold` or more (the noise `equivalent` uses), and strictly below even at threshold 0."""
        return gap is not None and gap > 0 and gap >= self.threshold

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
            raise OlftError("Every candidate layer failed to train; see the errors above. Try a lower --lr.")
        if self.metric == "score":
            return {c.layer: (c.score, -c.metrics.get("loss", 0.0)) for c in scored}
        missing = [c.layer for c in scored if "loss" not in c.metrics]
        if missing:
            raise OlftError(f"Candidate layer {missing[0]} has no held-out loss (this selector gives none, or an older "
                            "olft scored it): use --selection-metric score, or rerun with --overwrite.")
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
        """True when every finalist ranks the same: the choice is the tie-break alone."""
        ranked = self._ranked()
        return len(ranked) > 1 and len(set(ranked.values())) == 1

    def gaps(self) -> dict[int, float | None]:
        """Finalist -> how far its held-out loss lies above the winner's (negative: below), in
        standard errors of the paired per-example difference (0 for the winner; None without per-example losses)."""
        by_layer = {c.layer: c for c in self.candidates}
        best = by_layer[self.selected_layer]
        return {layer: paired_gap(best.example_losses, by_layer[layer].example_losses) for layer in self.ranking()}

    @property
    def confidence(self) -> float | None:
        """Gap from the winner to the runner-up in standard errors. None with one finalist or no
        losses, and where the probe chose the layer but found no signal (`no_signal`), or the trained
        finalists found none (`trained_no_signal`): the gap between candidates that all lose to a
        constant is noise, and a number would read as a measure of the choice. (A probe that only
        pruned leaves the trained stage's gap standing.)"""
        ranking = self.ranking()
        if len(ranking) < 2 or (self.no_signal and probe_decided({"rounds": self.rounds})) or self.trained_no_signal:
            return None
        return self.gaps()[ranking[1]]

    @property
    def equivalent(self) -> list[int]:
        """The winner and every finalist within `threshold` standard errors of it (the noise), on
        either side: ranked by score, a runner-up may have the lower held-out loss, and one far
        lower is a clear difference, not a tie. The winner alone when the selector gives no
        per-example losses (no noise estimate)."""
        gaps = self.gaps()
        winner = self.selected_layer
        return [winner] + [layer for layer, gap in gaps.items()
                           if layer != winner and gap is not None and abs(gap) < self.threshold]  # fmt: skip

    def contenders(self) -> list[int]:
        """What --selection-adaptive retrains: the winner, the finalists `equivalent` to it, and any
        whose held-out loss is clearly *below* the winner's (score and loss disagree: ranked by score,
        the winner may be the worse of the two on loss). Leaving such a layer out would drop the one
        the loss says is best for being too good. Layers clearly above on loss are left out."""
        gaps = self.gaps()
        winner = self.selected_layer
        return [winner] + [layer for layer, gap in gaps.items()
                           if layer != winner and gap is not None and gap < self.threshold]  # fmt: skip

    def measured(self) -> bool:
        """True when the gaps behind `equivalent` were measured: one finalist, or per-example
        losses for the winner and some other finalist. A gradient selector's are not."""
        gaps = self.gaps()
        return len(gaps) < 2 or any(gap is not None for layer, gap in gaps.items() if layer != self.selected_layer)

    def to_dict(self) -> dict:
        scored = any(c.score is not None for c in self.candidates)
        trained_gaps = self.trained_gaps()
        return {
            "status": "finished",  # `unfinished_entry` while candidates are still to train
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
        }


def unfinished_entry(candidates: list[dict], selection: dict) -> dict:
    """results.json's `selection` while a selection is unfinished (stopped, or still running): the
    candidates finished so far (`candidates`, their pieces as `Candidate` fields, per-example losses
    left out as in `Selection.to_dict`), sorted by steps then layer, under the `selection` section of
    the run's config. It claims nothing the finished candidates did not measure: no selected layer,
    ranking, confidence or equivalent layers (a candidate still to train may beat them all)."""
    return {
        "status": "unfinished",
        "protocol": (GRADIENT_PROTOCOL if selection.get("selector") == "gradient"
                     else "validation" if selection.get("selection_data") == "validation" else "train-holdout"),
        "selector": selection.get("selector"),
        "metric": selection.get("selection_metric", "score"),
        "candidates": sorted(({k: v for k, v in c.items() if k != "example_losses"} for c in candidates),
                             key=lambda c: (c.get("steps") or 0, c["layer"])),
        "selected_layer": None,
        "ranking": None,
        "confidence": None,
        "equivalent": None,
    }


def unfinished(sel: dict | None) -> bool:
    """True when `sel` (results.json's `selection`) is `unfinished_entry`'s: candidates only, no choice."""
    return bool(sel) and sel.get("status") == "unfinished"


def finished_selection(results: dict) -> dict | None:
    """results.json's `selection` once the selection has finished; None while none ran or it is unfinished."""
    sel = results.get("selection")
    return None if not sel or unfinished(sel) else sel


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
    score = next(c["score"] for c in reversed(sel["candidates"]) if c["layer"] == winner)
    return (f"layers {', '.join(map(str, level))} tie on {metric} ({100 * score:.1f}); layer {winner}'s "
            f"{loss_name(sel.get('protocol'))} is {gap:.1f} standard errors below layer {runner}'s"
            + (", the next lowest" if len(level) > 2 else ""))


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


def probe_decided(sel: dict) -> bool:
    """True when the probe's ranking chose the layer of `sel` (a `Selection.to_dict`): its round was
    the last (`probe`, or `auto` below 8 candidates), not a pruning before trained ones."""
    return ((sel.get("rounds") or [{}])[-1]).get("stage") == "probe"


def baseline_words(sel: dict) -> tuple[str, str, str]:
    """(what the constant baseline of `sel` predicts, its held-out loss's name, the margin a probe
    must beat it by: `Selection.beats_baseline`) in words."""
    regression = sel.get("baseline_predicts") == "mean"
    what, unit = ("the fit set's mean", "squared error") if regression else ("the class frequencies", "loss")
    by = f" by {sel['equivalence_threshold']:.1f} standard errors or more" if sel.get("equivalence_threshold") else ""
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
    as the run's warning and table.md say it; None when some trained finalist beat the constant
    predictor, or nothing trained chose."""
    if not sel.get("trained_no_signal"):
        return None
    what, unit, by = baseline_words(sel)
    last = (sel.get("rounds") or [{}])[-1]
    layers, steps = last.get("layers") or [], last.get("steps")
    fix = f"more --selection-steps (the finalists trained {steps} steps), {_more_fit_examples(sel, 'the candidates')}"
    fix += f" or {_more_score_examples(sel)}" if sel.get("protocol") != "validation" else ""
    fix += ", or --selector exhaustive (every candidate at the full budget)" if _short_of_full_budget(sel) else ""
    where = scored_on(sel.get("protocol"))
    return (f"no trained candidate's {where} loss beats predicting {what} ({where} {unit} {sel['baseline_loss']:.3f}){by}, "
            f"paired per example: {layer_list(layers)} found no signal at this budget, so the choice among them is a guess; "
            f"use {fix}")


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
    by_score = _ranked_by_score(sel)
    level = score_tie(sel, tied)
    if level:  # the loss broke a tie on the score: every layer in it is named
        score = next(c["score"] for c in reversed(sel["candidates"]) if c["layer"] == winner)
        lower = f"the lower {loss} of the two" if len(level) == 2 else f"the lowest {loss} of them"
        first = f"layers {', '.join(map(str, level))} tie on {metric} ({100 * score:.1f}); layer {winner} has {lower}"
        if gap < 0:  # a layer with a lower score has a lower loss still
            return f"{first}, but its {loss} is {-gap:.2f} standard errors above layer {nearest}'s"
        among = "" if len(level) == len(tied) + 1 else f" (and the lowest of layers {', '.join(map(str, sorted([winner, *tied])))})"
        return f"{first}{among}, but layer {nearest}'s is only {gap:.2f} standard errors above it"
    first = f"layer {winner} wins on {metric}" if by_score else f"layer {winner} ranks first"
    if gap < 0:  # the loss ranks them the other way
        return f"{first} but its {loss} is {-gap:.2f} standard errors above layer {nearest}'s"
    has = f"{first} and has" if by_score else f"layer {winner} has"
    return f"{has} the lowest {loss} of these layers, but layer {nearest}'s is only {gap:.2f} standard errors above it"


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


def check_candidates(spec: str, num_layers: int, selector: str, probe_keep: int | None) -> list[int]:
    """The candidate layers of `spec` (as `parse_candidates`), refusing a `probe_keep` that keeps
    them all: the probe would then cost time and prune nothing (plain `halving`). OlftError."""
    candidates = parse_candidates(spec, num_layers)
    if selector == "probe-halving" and probe_keep is not None and probe_keep >= len(candidates) > 1:
        # Below 3 candidates no --probe-keep both prunes and trains two: only a trained selector is left to name.
        use = (f"Use --probe-keep {len(candidates) - 1} or fewer, or --selector halving" if len(candidates) > 2
               else "Use --selector halving or exhaustive")
        raise OlftError(f"--probe-keep {probe_keep} keeps all {len(candidates)} candidates ({','.join(map(str, candidates))}), "
                        f"so the probe would prune nothing. {use} to train every candidate.")  # fmt: skip
    return candidates


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
