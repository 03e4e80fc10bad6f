"""Candidate layers, the selection protocol, and strategy names.

The paper's candidates are the model's middle bucket: split the N layers into three equal
buckets and take the middle one. Each candidate is tuned alone on a small training subset and
scored; the best score wins (ties go to the lower layer, which is cheaper to run above).
With `selection_metric="loss"` the lowest held-out loss wins instead: on a small scoring set
accuracies often tie (every candidate predicting the majority class), losses rarely do.

Protocols:
- "train" (default): candidates train on one subset of the train split and are scored on a
  disjoint subset of the train split, so validation data never influences the choice.
- "validation": the paper's protocol, scoring candidates on the validation split the final
  result is reported on. Results say which protocol was used.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from olft.errors import OlftError


def middle_bucket(num_layers: int) -> list[int]:
    """0-based indices of the middle third: layers [N//3, N - N//3)."""
    if num_layers < 3:
        return list(range(num_layers))
    third = num_layers // 3
    return list(range(third, num_layers - third))


def parse_candidates(spec: str, num_layers: int) -> list[int]:
    """'middle' | 'all' | 'A-B' (inclusive) | 'I,J,K' -> sorted layer indices, validated."""
    spec = spec.strip().lower()
    if spec == "middle":
        layers = middle_bucket(num_layers)
    elif spec == "all":
        layers = list(range(num_layers))
    elif re.fullmatch(r"-?\d+\s*-\s*-?\d+", spec) and not spec.startswith("-"):
        lo, hi = (int(x) for x in spec.split("-", 1))
        layers = list(range(lo, hi + 1))
        if not layers:
            raise OlftError(f"Candidate range '{spec}' is empty: write it low-high, e.g. 4-9.")
    elif re.fullmatch(r"\s*-?\d+(\s*,\s*-?\d+)*\s*", spec):
        layers = [int(x) for x in spec.split(",")]
    else:
        raise OlftError(f"Cannot read candidates '{spec}': use middle, all, a range like 4-9, or a list like 3,5,7.")
    bad = [i for i in layers if i < 0 or i >= num_layers]
    if bad:
        raise OlftError(
            f"Candidate layer {bad[0]} is out of range: this model has {num_layers} layers, numbered 0 to {num_layers - 1}."
        )
    return sorted(set(layers))


@dataclass(frozen=True)
class Strategy:
    """A named choice of layers: 'olft' (selected), 'final', 'full', or 'layers=I+J'."""

    name: str
    layers: tuple[int, ...] = ()


def parse_strategies(spec: str, num_layers: int) -> list[Strategy]:
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
            try:
                layers = tuple(sorted({int(x) for x in re.split(r"[+ ]", low[7:]) if x}))
            except ValueError:
                raise OlftError(f"Cannot read '{part}': write layers=I or layers=I+J, e.g. layers=11.") from None
            bad = [i for i in layers if i < 0 or i >= num_layers]
            if bad or not layers:
                raise OlftError(
                    f"Layer {bad[0] if bad else '(none)'} in '{part}' is out of range: this model has {num_layers} "
                    f"layers, numbered 0 to {num_layers - 1}. See `olft info`."
                )
            out.append(Strategy("layers=" + "+".join(map(str, layers)), layers))
        else:
            raise OlftError(f"Unknown strategy '{part}': use olft, final, full or layers=I+J.")
    if not out:
        raise OlftError("No strategy given: use --strategies olft,final,full (or a subset).")
    return out


@dataclass
class Candidate:
    layer: int
    score: float | None
    seconds: float
    metrics: dict = field(default_factory=dict)
    error: str | None = None


@dataclass
class Selection:
    protocol: str  # "train-holdout" or "validation"
    candidates: list[Candidate]
    train_examples: int
    score_examples: int
    seconds: float = 0.0
    cache_seconds: float = 0.0
    metric: str = "score"  # what ranks the candidates: "score" (higher wins) or "loss" (lower wins)

    def _ranked(self) -> dict[int, float]:
        """Layer -> ranking value, higher is better, over the candidates that trained."""
        scored = [c for c in self.candidates if c.score is not None]
        if not scored:
            raise OlftError("Every candidate layer failed to train; see the errors above. Try a lower --lr.")
        if self.metric == "score":
            return {c.layer: c.score for c in scored}
        missing = [c.layer for c in scored if "loss" not in c.metrics]
        if missing:
            raise OlftError(f"Candidate layer {missing[0]} has no held-out loss (scored by an older olft): rerun "
                            "the selection with --overwrite, or rank by --selection-metric score.")
        return {c.layer: -c.metrics["loss"] for c in scored}

    @property
    def selected_layer(self) -> int:
        ranked = self._ranked()
        best = max(ranked.values())
        return min(layer for layer, value in ranked.items() if value == best)

    @property
    def flat(self) -> bool:
        """True when every trained candidate ranks the same: the choice is the tie-break alone."""
        ranked = self._ranked()
        return len(ranked) > 1 and len(set(ranked.values())) == 1

    def to_dict(self) -> dict:
        scored = any(c.score is not None for c in self.candidates)
        return {
            "protocol": self.protocol,
            "candidates": [asdict(c) for c in self.candidates],
            "metric": self.metric,
            "selected_layer": self.selected_layer if scored else None,
            "flat": self.flat if scored else None,
            "seconds": self.seconds,
            "cache_seconds": self.cache_seconds,
            "train_examples": self.train_examples,
            "score_examples": self.score_examples,
        }
