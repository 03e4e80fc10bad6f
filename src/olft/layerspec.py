"""Which layers: the candidate list (--candidates) and the strategies (--strategies, --layers), as typed.

The paper's candidates are the model's middle bucket: split the N layers into three equal
buckets and take the middle one (`middle_bucket`). Everything here reads what a user wrote
(`read_layers` is the one reader of layer lists) and refuses, quoting it, what the model does not
have. The selectors that rank the candidates are `olft.select`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from olft.errors import OlftError


def middle_bucket(num_layers: int) -> list[int]:
    """0-based indices of the middle third: layers [N//3, N - N//3)."""
    if num_layers < 3:
        return list(range(num_layers))
    third = num_layers // 3
    return list(range(third, num_layers - third))


def read_layers(text: str, sep: str, shown: str, also: str = "") -> list[int] | None:
    """The layer numbers `text` lists, in the order written: numbers and inclusive ranges low-high
    (`4-9`), joined by `sep`, a character of `also`, or spaces. None when an item is neither; OlftError, quoting `shown`
    (what was typed), for an empty range or an empty entry (`3,,4`, `3,`). The one reader of
    --candidates, --layers and layers=.
    """
    text = re.sub(r"(?<=[0-9])\s*-\s*(?=[0-9])", "-", text.strip())  # "4 - 9" is the range 4-9
    items = re.split(rf"\s*[{re.escape(sep + also)}]\s*|\s+", text) if text else []
    if "" in items:  # "3,,4" or "3,": a layer left out while typing, not a list to guess at
        # Quote what was typed where the entry is missing ('+1' is no ',' problem, '3,+4' no ',,').
        joins = re.escape(sep + also)
        if found := re.search(rf"([{joins}])\s*([{joins}])", text):
            where, mark = f"'{found[1]}{found[2]}' in a row", found[2]
        elif found := re.match(rf"\s*([{joins}])", text):
            where, mark = f"a '{found[1]}' at the start", found[1]
        else:
            mark = re.search(rf"([{joins}])\s*$", text)[1]
            where = f"a '{mark}' at the end"
        raise OlftError(f"'{shown}' has an empty entry ({where}): list layers joined by one '{mark}', e.g. 3{mark}5.")
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
    low = spec.strip().lower()
    if low == "middle":
        layers = middle_bucket(num_layers)
    elif low == "all":
        layers = list(range(num_layers))
    else:
        layers = listed_candidates(spec)
        check_range(layers, num_layers, f"--candidates {spec.strip()}")
    return sorted(set(layers))


def listed_candidates(spec: str) -> list[int] | None:
    """The layers a --candidates spec lists ('4-9', '3,5,7', '2-4,9'), as written; None for
    'middle' and 'all', which the model's layer count decides. OlftError, quoting what was typed,
    for text that is none of these: checked as the config is made, before any model is read."""
    shown = f"--candidates {spec.strip()}"
    low = spec.strip().lower()
    if low in ("middle", "all"):
        return None
    layers = read_layers(low, ",", shown)
    if layers is None:
        raise OlftError(f"Cannot read '{shown}': use middle, all, a range like 4-9, or a list like 3,5,7 "
                        "(or both: 2-4,9).")  # fmt: skip
    return layers


@dataclass(frozen=True)
class Strategy:
    """A named choice of layers: 'olft' (selected), 'final', 'full', or 'layers=I+J'."""

    name: str
    layers: tuple[int, ...] = ()


# How a list of layers is written: as a --strategies entry (layers=3+5) or to `olft train` (--layers 3,5,
# or 3+5 as the strategy and table.md write it; a --strategies entry cannot take ',', which separates entries).
LAYER_LISTS = {"layers=": ("layers=", "+", ""), "--layers": ("--layers ", ",", "+")}


def parse_layers(text: str, option: str = "layers=", num_layers: int | None = None) -> tuple[int, ...]:
    """The layers `text` lists, sorted: `3+5` or `2-4` of a --strategies entry `layers=3+5`, or
    `3,5`, `3+5` or `2-4` of `olft train --layers 3,5` (option "--layers"); spaces separate them too
    (`read_layers`, as --candidates). OlftError, quoting what was written, for an entry that is no
    layer number or range, no layer at all, a layer given twice (it would tune once, under a name
    that lists it twice), or, given `num_layers`, a layer the model does not have.
    """
    lead, sep, also = LAYER_LISTS[option]
    shown = lead + text
    given = read_layers(text, sep, shown, also)
    if given is None:
        raise OlftError(f"Cannot read '{shown}': write layer numbers joined by '{sep}', e.g. {lead}3 or {lead}3{sep}5, "
                        f"or ranges low-high, e.g. {lead}2-4 (`olft info` lists the model's layers).")  # fmt: skip
    layers = tuple(sorted(set(given)))
    if len(layers) < len(given):  # a layer tunes once: 'layers=2+2' would name a strategy it is not
        twice = next(i for i in given if given.count(i) > 1)
        # The example joins them as typed: '1+3,1+3' -> 1+3 (',' and '+' both join one set of layers here).
        join = next((c for c in also if c in text), sep)
        both = (f" (',' and '{also}' both join layers into the one set {lead.strip()} tunes together)"
                if also and sep in text and any(c in text for c in also) else "")
        raise OlftError(f"Layer {twice} appears twice in '{shown}': give each layer once, e.g. "
                        f"{lead}{join.join(map(str, layers))}{both}.")
    if num_layers is not None:
        check_range(layers, num_layers, shown)
    return layers


# The method's own strategies, in the order the method defines them (the paper's Table 1).
METHOD_STRATEGIES = ("olft", "final", "full")


def strategy_key(name: str) -> tuple:
    """Where strategy `name` comes in every listing of a folder's strategies (table.md's Tables 1
    and 2, results.json's `strategies` and `failed`): olft, final, full as the method defines them
    (the selected layer first, then the two references it is measured against), then explicit
    layers strategies by their layers in ascending order (layers=2 before layers=2+5 before
    layers=10, by number, not as text), then any other name alphabetically. The order depends only
    on the names, never on the order pieces were run or found, so an add-on (`olft train
    --layers N`) lands in the same row in every folder."""
    if name in METHOD_STRATEGIES:
        return (0, METHOD_STRATEGIES.index(name), ())
    if re.fullmatch(r"layers=[0-9]+(\+[0-9]+)*", name):  # as `parse_strategies` names them
        return (1, 0, tuple(int(i) for i in name[7:].split("+")))
    return (2, 0, (name,))


def parse_strategies(spec: str, num_layers: int) -> list[Strategy]:
    """The strategies of a --strategies spec ('olft,final,layers=2+5') on a model of `num_layers`
    layers. Raises OlftError for an unknown strategy, a layer out of range or given twice, a strategy
    given twice (full and all are one), or no strategy at all."""
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
        if out[-1].name in [s.name for s in out[:-1]]:  # one folder holds one result of each name
            raise OlftError(f"--strategies {spec} gives {out[-1].name} twice ({part!r} repeats it); give each strategy once.")
    if not out:
        raise OlftError("No strategy given: use --strategies olft,final,full (or a subset).")
    return out


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
