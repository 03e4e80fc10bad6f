"""Tokenized examples and length-grouped, per-batch-padded batches.

GLUE sentences are short (SST-2 averages about 13 words): padding every batch to a fixed 128
tokens would waste most of the compute, so batches are padded only to their longest member and
examples of similar length are grouped together. Padding is always on the right, so the
positions of real tokens do not depend on the batch they land in.

Truncation is longest-first for every family: when a pair is too long, tokens come off the
longer text first, so no text of a pair is ever cut away whole (decoders join the two texts
with a newline; they get the same rule, applied to each text before joining). How many
examples lost tokens, per text, is counted in `Encoded.truncated` and reported with the run.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from olft.errors import OlftError
from olft.tasks.registry import Line

DEFAULT_MAX_LENGTH = 128  # tokens, when --max-length is not given (capped at the model's limit)
TEXT_NAMES = ("text_a", "text_b")  # how reports name the first and second text of an example
_UNSET_LIMIT = 10**9  # tokenizers without a known limit report model_max_length as ~1e30


class EmptyTextError(OlftError):
    """A text that tokenizes to zero tokens. `empty` lists each (example index, text index) such
    text, so a caller that made the examples itself (olft's check sentences, `--text`) can name
    them as the user knows them; the message names the examples' sources (file lines)."""

    def __init__(self, message: str, empty: list[tuple[int, int]]):
        super().__init__(message)
        self.empty = empty


@dataclass
class Encoded:
    """Token ids, other model inputs and labels of one split, in example order.

    `extra` holds the tokenizer outputs the model accepts besides input_ids and attention_mask
    (BERT's token_type_ids, ...), one list per example, aligned with `input_ids`.
    `truncated` counts examples that lost tokens: {"examples": k, "text_a": n, "text_b": m}.
    """

    input_ids: list[list[int]]
    labels: list[int | float]
    pad_id: int
    truncated: dict[str, int] = field(default_factory=dict)
    extra: dict[str, list[list[int]]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


@dataclass
class Batch:
    """One padded batch: every tensor is (batch, width) except `indices` and `labels` (batch,).

    `extra` holds the other model inputs (see `Encoded.extra`), padded with 0 like input_ids.
    """

    indices: torch.Tensor  # positions of the examples in their `Encoded`
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


PAIR_JOINER = "\n"  # what joins a decoder's two texts into one (exported models' READMEs quote it)


def joins_pairs(tokenizer) -> bool:
    """Whether a pair reaches the model as one text, the two joined by `PAIR_JOINER` (decoders:
    no separator token), rather than as the tokenizer's pair encoding (encoders: [SEP], segment ids)."""
    return getattr(tokenizer, "sep_token", None) is None


def fingerprint(examples: Sequence) -> str:
    """sha256 of the examples' texts and labels, in order: the data a run trained or scored on,
    whatever it was read from (a file, the GLUE folder, `datasets`), so that a folder continued on
    edited data is told apart (`runfolder.RunFolder.start`). Each text is length-prefixed, so no
    two splits hash alike by shifting characters between texts; about 0.2 s for SST-2's 67k rows."""
    h = hashlib.sha256()
    for ex in examples:
        h.update("".join(f"{len(t)}:{t}" for t in (*ex.texts, repr(ex.label))).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


# ------------------------------------------------------------------------------ max length

# RoBERTa-style embeddings number positions from padding_idx + 1 (transformers'
# create_position_ids_from_input_ids), so max_position_embeddings (514 for roberta-base) holds
# padding_idx + 1 fewer tokens (512).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "data2vec-text", "ibert",
                     "mpnet", "roberta-prelayernorm", "luke", "markuplm", "mra", "xmod"}


def usable_positions(model_config: Any) -> int | None:
    """How many tokens the model's position embeddings can number: `max_position_embeddings`,
    less the `pad_token_id + 1` offset of RoBERTa-style models; None when the config has none."""
    n = getattr(model_config, "max_position_embeddings", None)
    if not isinstance(n, int):
        return None
    if getattr(model_config, "model_type", None) in _OFFSET_POSITIONS:
        n -= (getattr(model_config, "pad_token_id", None) or 0) + 1
    return n


def length_limits(tokenizer, num_texts: int, model_config: Any) -> tuple[int, int | None]:
    """(shortest, longest) max_length in tokens this tokenizer and model can honour.

    Shortest: the special tokens (and a decoder's newline between texts) plus one token per
    text. Longest: the positions the model can number (`usable_positions`) and the tokenizer's
    `model_max_length`, whichever is smaller; None when neither is known.
    """
    pair = num_texts > 1
    if pair and joins_pairs(tokenizer):
        newline = len(tokenizer(PAIR_JOINER, add_special_tokens=False)["input_ids"])
        shortest = tokenizer.num_special_tokens_to_add(pair=False) + newline + num_texts
    else:
        shortest = tokenizer.num_special_tokens_to_add(pair=pair) + num_texts
    limits = [usable_positions(model_config), getattr(tokenizer, "model_max_length", None)]
    known = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < _UNSET_LIMIT]
    return shortest, min(known) if known else None


def resolve_max_length(requested: int | None, tokenizer, num_texts: int, model_config: Any) -> int:
    """The max_length to encode with: `requested` (--max-length) if the model can honour it.

    None means the default, DEFAULT_MAX_LENGTH capped at the model's limit. Raises OlftError
    naming --max-length and the value that works when `requested` is above the model's limit
    or below what the special tokens plus one token per text need.
    """
    shortest, longest = length_limits(tokenizer, num_texts, model_config)
    if requested is None:
        value = DEFAULT_MAX_LENGTH if longest is None else min(DEFAULT_MAX_LENGTH, longest)
        if value < shortest:
            raise OlftError(f"This model takes at most {longest} tokens, fewer than the {shortest} its "
                            f"special tokens and {num_texts} text(s) need; use a model with longer inputs.")
        return value
    if longest is not None and requested > longest:
        raise OlftError(f"--max-length {requested} is more than this model can take (max_position_embeddings / "
                        f"tokenizer model_max_length: {longest}). Use --max-length {longest} or less.")
    if requested < shortest:
        raise OlftError(f"--max-length {requested} leaves no room for the text: the special tokens and one token "
                        f"for each of the {num_texts} text(s) need {shortest}. Use --max-length {shortest} or more.")
    return requested


def longest_first(lengths: Sequence[int], budget: int) -> tuple[int, ...]:
    """Tokens to keep of each text so that together they fit `budget`, longer text cut first.

    The rule of Hugging Face tokenizers' `longest_first` (so encoders, which the tokenizer
    truncates itself, count the same way): with n1 <= n2, keep n1 whole if n2 can shrink to
    budget - n1 (but not below n1), else keep budget // 2 of the shorter and the rest of the
    longer. Every text keeps at least one token when budget >= len(lengths).
    """
    if len(lengths) == 1:
        return (min(lengths[0], budget),)
    n1, n2 = lengths
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long = (n2, n1) if swap else (n1, n2)
    long = short if short > budget else max(short, budget - short)
    if short + long > budget:
        short, long = budget // 2, budget // 2 + budget % 2
    return (long, short) if swap else (short, long)


# -------------------------------------------------------------------------------- encoding

def encode(tokenizer, examples: Sequence, max_length: int, model_inputs: Sequence[str] = ("token_type_ids",)) -> Encoded:
    """Tokenize examples (objects with `.texts`, `.label` and, optionally, `.source`).

    Inputs longer than `max_length` tokens are cut longest-first (see `longest_first`); every
    tokenizer output named in `model_inputs` (besides input_ids and attention_mask, which
    `collate` builds) is kept in `Encoded.extra`. Raises OlftError for an empty split, and
    EmptyTextError for a text that tokenizes to zero tokens, naming the example's source ("path, line N").
    """
    if not examples:
        raise OlftError("The split is empty: it has no examples to tokenize. Check the data file.")
    columns = [list(col) for col in zip(*(tuple(ex.texts) for ex in examples), strict=True)]
    join = len(columns) > 1 and joins_pairs(tokenizer)
    firsts = [PAIR_JOINER.join(t) for t in zip(*columns, strict=True)] if join else columns[0]
    seconds = columns[1] if len(columns) > 1 and not join else None
    keep = [name for name in model_inputs if name not in ("input_ids", "attention_mask")]
    out = _tokenize(tokenizer, firsts, seconds, keep)
    if len(columns) == 1:  # a single text's tokens: all but the fixed special tokens (saves a pass)
        specials = tokenizer.num_special_tokens_to_add(pair=False)
        pieces = [[len(ids) - specials for ids in out["input_ids"]]]
    else:
        pieces = [[len(ids) for ids in tokenizer(col, add_special_tokens=False, verbose=False)["input_ids"]] for col in columns]
    _refuse_empty_texts(examples, pieces)
    long = [i for i, ids in enumerate(out["input_ids"]) if len(ids) > max_length]
    lost = [0] * len(columns)
    if long and not join:  # the tokenizer's own longest-first truncation, as HF recipes use it
        cut = _tokenize(tokenizer, [firsts[i] for i in long], [seconds[i] for i in long] if seconds else None, keep,
                        truncation="longest_first", max_length=max_length)  # fmt: skip
    for n, i in enumerate(long):
        lengths = [p[i] for p in pieces]
        budget = max_length - (len(out["input_ids"][i]) - sum(lengths))  # minus special tokens / joiner
        if join:
            row, kept = _cut_joined(tokenizer, [c[i] for c in columns], lengths, budget, max_length, keep,
                                    getattr(examples[i], "source", None))  # fmt: skip
        else:
            row, kept = {name: values[n] for name, values in cut.items()}, longest_first(lengths, budget)
        for name, values in out.items():
            values[i] = row[name]
        for j, (had, has) in enumerate(zip(lengths, kept, strict=True)):
            lost[j] += has < had
    truncated = {"examples": len(long), **{TEXT_NAMES[j]: lost[j] for j in range(len(columns))}}
    ids = out.pop("input_ids")
    labels = [ex.label for ex in examples]
    return Encoded(input_ids=ids, labels=labels, pad_id=tokenizer.pad_token_id, truncated=truncated, extra=out)


def _tokenize(tokenizer, firsts: list[str], seconds: list[str] | None, keep: Sequence[str], **kwargs: Any) -> dict[str, list[list[int]]]:
    """input_ids plus those of `keep` that the tokenizer returns, as lists of lists."""
    enc = tokenizer(firsts, seconds, add_special_tokens=True, verbose=False, **kwargs)
    return {name: [list(x) for x in enc[name]] for name in ("input_ids", *keep) if name in enc}


def _refuse_empty_texts(examples: Sequence, pieces: list[list[int]], shown: int = 5) -> None:
    """A text with zero tokens would reach the model as nothing (or crash a decoder): refuse it
    (EmptyTextError), naming every such example (the first `shown`, then how many more), so one
    fix covers all."""
    empty = [(i, j) for i in range(len(examples)) for j, lengths in enumerate(pieces) if lengths[i] == 0]
    if not empty:
        return
    rows = list(dict.fromkeys(i for i, _ in empty))
    why = "empty after tokenization (zero tokens: blank, or only characters the tokenizer drops)"
    if len(rows) == 1:
        i, j = empty[0]
        which = f" {TEXT_NAMES[j]} (text {j + 1} of {len(pieces)})" if len(pieces) > 1 else " its text"
        raise EmptyTextError(f"{_where(examples, [i])}:{which} is {why}. Fill in or remove that row.", empty)
    more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
    raise EmptyTextError(f"{_where(examples, rows[:shown])}{more} ({len(rows)} rows): a text is {why}. "
                         "Fill in or remove those rows.", empty)


def _where(examples: Sequence, indices: list[int]) -> str:
    """Where examples came from, for a message: "d.tsv, line 3" for one (a file's `Line`);
    "d.tsv, lines 3, 8" for several of one file; else their sources (or positions: "example 4 of
    its split") one after another, separated by "; "."""
    sources = [getattr(examples[i], "source", None) or f"example {i + 1} of its split" for i in indices]
    files = {s.path if isinstance(s, Line) else None for s in sources}
    if len(sources) > 1 and len(files) == 1 and None not in files:
        return f"{sources[0].path}, lines {', '.join(str(s.number) for s in sources)}"
    return "; ".join(map(str, sources))


def _cut_joined(tokenizer, texts: list[str], lengths: list[int], budget: int, max_length: int, keep: Sequence[str],
                source: Line | str | None) -> tuple[dict[str, list[int]], tuple[int, ...]]:
    """Longest-first for a decoder's newline-joined pair: cut each text, join, tokenize again.

    Cutting each text at a token boundary and joining keeps the input in the exact form of
    untruncated examples. Tokens can merge differently across the join, so when the result
    is still too long the budget shrinks by the excess and the cut is redone.
    """
    while budget >= len(texts):
        kept = longest_first(lengths, budget)
        parts = [t if k >= n else _text_prefix(tokenizer, t, k) for t, n, k in zip(texts, lengths, kept, strict=True)]
        row = {name: values[0] for name, values in _tokenize(tokenizer, [PAIR_JOINER.join(parts)], None, keep).items()}
        excess = len(row["input_ids"]) - max_length
        if excess <= 0:
            return row, kept
        budget -= excess
    where = source or "an example"
    raise OlftError(f"{where}: does not fit --max-length {max_length} with a token of each text. "
                    "Use a larger --max-length.")


def _text_prefix(tokenizer, text: str, k: int) -> str:
    """The part of `text` its first k tokens cover (k >= 1)."""
    if getattr(tokenizer, "is_fast", False):
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return text[: offsets[k - 1][1]]
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:k])


def collate(enc: Encoded, indices: Sequence[int], regression: bool) -> Batch:
    """Pad the examples at `indices` on the right to the longest of them (pad id, mask 0, extras 0)."""
    width = max(len(enc.input_ids[i]) for i in indices)
    ids = torch.full((len(indices), width), enc.pad_id, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    extra = {name: torch.zeros((len(indices), width), dtype=torch.long) for name in enc.extra}
    for row, i in enumerate(indices):
        seq = enc.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
        for name, values in enc.extra.items():
            extra[name][row, : len(seq)] = torch.tensor(values[i], dtype=torch.long)
    dtype = torch.float32 if regression else torch.long
    labels = torch.tensor([enc.labels[i] for i in indices], dtype=dtype)
    return Batch(torch.tensor(list(indices), dtype=torch.long), ids, mask, labels, extra)


def train_order(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, sort within mega-batches, shuffle batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def eval_order(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches sorted by length (predictions are mapped back by index)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]


def iterate(enc: Encoded, batches: list[list[int]], regression: bool) -> Iterator[Batch]:
    for idx in batches:
        yield collate(enc, idx, regression)
