"""Models as a stack: embed -> layer[0..N-1] -> final norm -> pool -> classification head.

Everything outside this module, `olft.families` and `olft.pooledlayer` talks to `Stack`, never to an architecture
family. Where the pieces of a model live is discovered from the loaded model itself
(`olft.families.discover`), so any transformers model with a sequence-classification class,
encoder or decoder, runs; `Stack.check` then verifies that running the layers one by one gives
the model's own forward, and refuses the model with a clear message where it does not.

The stack can start at any layer from hidden states computed earlier (suffix execution). Each
layer is called with its own arguments (attention mask, rotary position embeddings, position ids,
relative positions), taken from the model's own forward: `prepare` runs that forward with every
layer's computation replaced by a recorder that keeps its arguments and passes the hidden states
through, so masks and positions are always built by transformers' own code, for every family,
attention implementation and layer kind (sliding-window vs full, local vs global rotary).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from olft.errors import OlftError
from olft.families import Family, discover, no_segment_ids
from olft.pooledlayer import dropout_active, pooled_layer, pooled_unavailable, rows

log = logging.getLogger(__name__)
# Why the pooled-token path is off when a model's layer code does not fit it (OPT's MLP reads a
# flattened (batch * seq, hidden) input, Falcon's parallel block adds whole-sequence tensors).
UNFIT = "the pooled-token path does not fit the layer code of"

POOLINGS = ("cls", "mean", "last")  # first token, mean of real tokens, last real token


def get_submodule(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path) if path else root


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(get_submodule(root, parent), name, module)


# Stack.check's refusal when a family reshapes or pads its inputs between the embeddings and the
# layers (Longformer): both ways of noticing it (a changed length, a layer failing) end the same.
_CHANGES_INPUTS = (
    "this family changes its inputs inside its forward (e.g. pads them to a multiple of an attention window), "
    "which olft does not replay, so olft cannot tune it."
)


class _StopForward(Exception):
    """Raised by a layer's recorder once every needed layer's call arguments are recorded."""


@dataclass
class LayerInputs:
    """Hidden states entering layer 0 and each layer's own call arguments.

    `calls[i]` is (args, kwargs) of layer i without the hidden states; only the layers the
    caller asked for are recorded (`prepare(stop=...)`).
    """

    hidden: torch.Tensor
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, (batch,): the rightmost 1 of the mask.

    Correct for right and left padding alike (transformers finds the last non-pad token the same
    way); a row without any real token gets 0.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.to(torch.long)).argmax(dim=-1)


class Stack(nn.Module):
    """A headless transformer plus our pooling and classification head.

    The head is ours (dropout + Linear) for every family so that pooling is uniform: `pooling`
    is "last" (last real token, found by position: correct under any padding and when pad equals
    eos), "cls" (first token, through the model's pooler where its own classifier uses one) or
    "mean" (mean over real tokens, for sentence-embedding checkpoints trained that way).

    `family` may be given (a `Family`) or left out to be discovered from `base`.
    `model_inputs` names the tokenizer outputs besides input_ids/attention_mask that the base
    forward takes (e.g. token_type_ids); batches carry them in `extra` (see `set_model_inputs`).
    """

    # The last layer at the pooled token only (olft.pooledlayer.pooled_layer): "auto" when exact
    # (no dropout drawing in that layer), "always" (also under dropout: same distribution, other
    # random draws), "off" (run the whole last layer).
    pooled_shortcut: str = "auto"

    def __init__(
        self,
        base: nn.Module,
        family: Family | str | None = None,
        num_labels: int = 2,
        head_dropout: float = 0.1,
        pooling: str | None = None,
    ):
        super().__init__()
        self.base = base
        base.config.use_cache = False  # transformers 5 builds a KV cache by default
        self.family = family if isinstance(family, Family) else discover(base)
        self.num_labels = num_labels
        self.pooling = pooling or self.family.pooling
        if self.pooling not in POOLINGS:
            raise OlftError(f"Unknown pooling '{self.pooling}': use one of {', '.join(POOLINGS)}.")
        self.pooling_source = "given" if pooling else "family"  # recorded in results
        self.model_inputs: tuple[str, ...] = ()
        self.head_dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(self.output_size, num_labels)
        self._pooled_checked: dict[tuple, str | None] = {}  # last-layer structure -> None (verified) or why off
        self._pooled_warned: set[str] = set()  # reasons already logged

    # -- structure -----------------------------------------------------------------------------
    @property
    def layers(self) -> nn.ModuleList:
        return get_submodule(self.base, self.family.layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states between layers."""
        config = self.base.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        return config.hidden_size

    @property
    def output_size(self) -> int:
        """Width of the pooled representation (a final projection may change it: OPT's project_out)."""
        for path in reversed(self.family.after):
            module = get_submodule(self.base, path)
            if isinstance(module, nn.Linear):
                return module.out_features
        return self.hidden_size

    def layer_path(self, index: int) -> str:
        """Dotted path of layer `index` inside `base` (used to name and locate PEFT modules)."""
        return f"{self.family.layers}.{index}"

    def check_layers(self, layers: list[int]) -> list[int]:
        """Validate layer indices against this model; index 0 is a layer, negatives are not."""
        n = self.num_layers
        bad = [i for i in layers if not isinstance(i, int) or i < 0 or i >= n]
        if bad:
            raise OlftError(
                f"Layer index {bad[0]} is out of range: this model has {n} layers, numbered 0 to "
                f"{n - 1}. Pick layers in that range (see `olft info`)."
            )
        if not layers:
            raise OlftError(f"No layers given: name at least one layer index (0 to {n - 1}).")
        return sorted(set(layers))

    def set_model_inputs(self, tokenizer) -> tuple[str, ...]:
        """Record which tokenizer outputs besides input_ids/attention_mask the base forward takes.

        Segment ids are left out for a model with fewer than two segment embeddings
        (`families.no_segment_ids`).
        """
        params = inspect.signature(self.base.forward).parameters
        names = getattr(tokenizer, "model_input_names", None) or ()
        skip = ("input_ids", "attention_mask", *(("token_type_ids",) if no_segment_ids(self.base.config) else ()))
        self.model_inputs = tuple(n for n in names if n not in skip and n in params)
        return self.model_inputs

    def freeze_base(self) -> None:
        """Base weights never train; PEFT modules re-enable their own parameters."""
        for p in self.base.parameters():
            p.requires_grad_(False)

    def set_mode(self, training: bool, frozen_below: int) -> None:
        """Train mode for the tuned part; eval mode (dropout off) for everything below it.

        The frozen layers below the lowest tuned layer must be deterministic for their outputs
        to be cacheable, and they have no trainable weight that dropout could regularise.
        """
        self.train(training)
        if training:
            for path in self.family.embeddings:
                get_submodule(self.base, path).eval()
            for i in range(frozen_below):
                self.layers[i].eval()

    # -- forward -------------------------------------------------------------------------------
    def prepare(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, stop: int | None = None, **extra) -> LayerInputs:
        """Run the model's own forward with each layer replaced by a recorder of its arguments.

        Records layers 0..stop-1 (all by default; at least layer 0) and stops the forward there,
        so no layer computes anything: the cost is the embeddings and the mask construction.
        """
        stop = self.num_layers if stop is None else max(1, min(stop, self.num_layers))
        calls: list[tuple[tuple, dict]] = []
        hidden: list[torch.Tensor] = []
        tail = (None,) * (self.family.layer_output - 1)

        def recorder(*args, **kwargs):
            h = args[0] if args else kwargs.pop("hidden_states")
            if not hidden:
                hidden.append(h)
            calls.append((tuple(args[1:]), kwargs))
            if len(calls) == stop:
                raise _StopForward
            return (h, *tail) if self.family.layer_output else h

        layers = list(self.layers)[:stop]
        saved = [layer.__dict__.get("forward") for layer in layers]
        for layer in layers:
            layer.forward = recorder
        try:
            self.base(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra)
        except _StopForward:
            pass
        finally:
            for layer, forward in zip(layers, saved, strict=True):
                if forward is None:
                    del layer.forward
                else:
                    layer.forward = forward
        if len(calls) < stop:
            raise OlftError(f"{type(self.base).__name__} called only {len(calls)} of its {stop} layers in its forward.")
        return LayerInputs(hidden=hidden[0], calls=calls)

    def run_layers(self, hidden: torch.Tensor, inputs: LayerInputs, start: int, stop: int) -> torch.Tensor:
        for i in range(start, stop):
            args, kwargs = inputs.calls[i]
            out = self.layers[i](hidden, *args, **kwargs)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        """The modules after the last layer (final norm, OPT's project_out), in order."""
        for path in self.family.after:
            hidden = get_submodule(self.base, path)(hidden)
        return hidden

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, seq, hidden) after the last layer -> (batch, output_size) pooled representation."""
        hidden = self.finish(hidden)
        if self.pooling == "mean":
            weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        pos = self.pooled_positions(attention_mask)
        pooled = rows(hidden, pos)
        if self.pooling == "cls" and self.family.pooler:
            # BERT's pooler takes the whole sequence and reads position 0 itself.
            return get_submodule(self.base, self.family.pooler)(pooled)
        return pooled.squeeze(1)

    def pooled_positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The position each row is pooled at, (batch,): 0, or the last real token."""
        if self.pooling == "cls":
            return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)
        return last_token_positions(attention_mask)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_dropout(pooled))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        start: int = 0,
        hidden: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> torch.Tensor:
        """Logits (batch, num_labels). With `hidden`, layers below `start` are skipped: `hidden`
        enters layer `start`. `extra` holds the other inputs of the base forward (token_type_ids)."""
        inputs = self.prepare(input_ids, attention_mask, **extra)
        h = inputs.hidden if hidden is None else hidden
        last = self.num_layers - 1
        h = self.run_layers(h, inputs, start, last)
        pooled = self.pooled_last_layer(h, inputs, attention_mask) if start <= last else None
        if pooled is None:
            h = self.run_layers(h, inputs, max(start, last), self.num_layers)
            pooled = self.pool(h, attention_mask)
        return self.classify(pooled)

    @torch.inference_mode()
    def hidden_entering(self, input_ids, attention_mask, layer: int, hidden=None, start: int = 0, **extra):
        """Hidden states entering `layer` (the frozen prefix), without building a graph."""
        inputs = self.prepare(input_ids, attention_mask, stop=layer, **extra)
        h = inputs.hidden if hidden is None else hidden
        return self.run_layers(h, inputs, start, layer)

    # -- the last layer at the pooled token only -------------------------------------------------
    def shortcut_unavailable(self) -> str | None:
        """None when the last layer may run at the pooled token only, else why not."""
        if self.pooled_shortcut == "off":
            return "switched off (Stack.pooled_shortcut = 'off')"
        if self.pooling == "mean":
            return "mean pooling reads every position of the last layer"
        layer = self.layers[-1]
        why = pooled_unavailable(self.family, layer)
        if why:
            return why
        if self.pooled_shortcut != "always" and dropout_active(layer):
            return "dropout is active in the last layer (set Stack.pooled_shortcut = 'always' to use it anyway)"
        return self._pooled_checked.get(self._last_layer_key())

    def _last_layer_key(self) -> tuple:
        layer = self.layers[-1]
        attn = get_submodule(layer, self.family.attn)
        impl = getattr(getattr(attn, "config", None), "_attn_implementation", None)
        return (self.pooling, impl, tuple((n, type(m).__name__) for n, m in layer.named_modules()))

    def pooled_last_layer(self, hidden: torch.Tensor, inputs: LayerInputs, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """Pooled output of the last layer computed at the pooled token only, or None.

        Keys and values need every position, but (depending on the path) query, attention output,
        residual and MLP only the pooled token: exact up to float rounding, with PEFT modules in
        the layer. The first batch of each last-layer structure (PEFT modules in or out, attention
        kernel) is checked against the whole layer; a mismatch switches the path off, logged.
        """
        if self.shortcut_unavailable() is not None:
            return None
        key = self._last_layer_key()
        pos = self.pooled_positions(attention_mask)
        if key not in self._pooled_checked:
            self._pooled_checked[key] = self._check_pooled(hidden, inputs, pos)
            why = self._pooled_checked[key]
            if why is not None:
                # Each last-layer structure (before and after PEFT modules go in) is checked, and a
                # path that does not fit the architecture fails both the same way: say it once.
                if why not in self._pooled_warned:
                    self._pooled_warned.add(why)
                    # A layer whose code the path does not fit (OPT, Falcon) is a known limit, the
                    # whole layer is exact and the user can do nothing about it: a debug line (-v)
                    # for whoever looks into speed. A path that runs but differs from the whole
                    # layer would be a bug in it: that is warned.
                    level = logging.DEBUG if why.startswith(UNFIT) else logging.WARNING
                    log.log(level, "pooled-token last layer switched off: %s; the whole last layer runs "
                            "(results exact, a little slower)", why)
                return None
        out = pooled_layer(self.family, self.layers[-1], hidden, inputs.calls[-1], pos)
        return self.pool(out, torch.ones(out.shape[:2], dtype=torch.long, device=out.device))

    @torch.no_grad()
    def _check_pooled(self, hidden: torch.Tensor, inputs: LayerInputs, pos: torch.Tensor) -> str | None:
        """None when the pooled-token path equals the whole layer on this batch, else why not."""
        layer = self.layers[-1]
        modes = {m: m.training for m in layer.modules()}
        layer.eval()  # compare without dropout draws
        try:
            whole = rows(self.run_layers(hidden, inputs, self.num_layers - 1, self.num_layers), pos)
            try:
                short = pooled_layer(self.family, layer, hidden, inputs.calls[-1], pos)
            except Exception as exc:  # a path that does not fit this model's layer code
                return f"{UNFIT} {type(layer).__name__} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        finally:
            for m, mode in modes.items():
                m.train(mode)
        low = whole.dtype != torch.float32 or torch.is_autocast_enabled(whole.device.type)
        tol = (2e-2 if low else 1e-4) * max(1.0, float(whole.abs().max()))
        diff = float((short.to(whole.dtype) - whole).abs().max()) if short.shape == whole.shape else float("inf")
        if not diff <= tol:
            return f"it differs from the whole last layer by {diff:.3g} (tolerance {tol:.3g}) on the first batch"
        return None

    # -- verification --------------------------------------------------------------------------
    @torch.no_grad()
    def check(self, length: int = 11) -> float:
        """Max |difference| between the layer-by-layer run and the model's own forward.

        Runs two dummy sequences (one padded) through both and compares every layer's input and
        the final output at real tokens. Raises OlftError when they differ, or when the layers
        fail on inputs the model's own forward takes: the model then runs code between its
        layers that olft does not replay, and its results would be wrong. The length is prime
        so that a model padding its inputs to a multiple of a window or block inside its own
        forward (Longformer) shows it here, not in the middle of a run.
        """
        was_training = self.training
        self.eval()
        try:
            from olft.families import _dummy_inputs

            ids = _dummy_inputs(self.base, length).repeat(2, 1)
            mask = torch.ones_like(ids)
            mask[1, length // 2 :] = 0
            if self.family.pooling == "last" and getattr(self.base.config, "pad_token_id", None) is not None:
                ids[1, length // 2 :] = self.base.config.pad_token_id
            own = self.base(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
            inputs = self.prepare(ids, mask)
            h, worst, where = inputs.hidden, 0.0, ""
            real = mask.bool()
            theirs = list(own.hidden_states[: self.num_layers]) + [own[0]]
            for i in range(self.num_layers + 1):
                ours = self.finish(h) if i == self.num_layers else h
                positions = next((t.shape[1] for t in (ours, theirs[i]) if t.shape[:2] != ids.shape), None)
                if positions is not None:
                    raise OlftError(
                        f"{type(self.base).__name__} gives {'its output' if i == self.num_layers else f'layer {i}'} "
                        f"{positions} positions for an input of {length} tokens: {_CHANGES_INPUTS}"
                    )
                diff = float((ours[real] - theirs[i][real]).abs().max())
                if diff > worst:
                    worst, where = diff, "the final output" if i == self.num_layers else f"the input of layer {i}"
                if i < self.num_layers:
                    try:
                        h = self.run_layers(h, inputs, i, i + 1)
                    except Exception as exc:  # the model's forward reshapes or pads what its layers receive
                        first = str(exc).splitlines()[0] if str(exc) else ""
                        raise OlftError(
                            f"olft's layer-by-layer run of {type(self.base).__name__} fails at layer {i} on an input of "
                            f"{length} tokens that the model's own forward takes ({type(exc).__name__}: {first}): "
                            f"{_CHANGES_INPUTS}"
                        ) from exc
        finally:
            self.train(was_training)
        scale = max(1.0, float(own[0][real].abs().max()))
        if worst > 1e-4 * scale:
            raise OlftError(
                f"olft's layer-by-layer run of {type(self.base).__name__} differs from the model's own forward "
                f"(max |difference| {worst:.3g} at {where}): this family runs code between its layers that olft "
                "does not replay, so olft cannot tune it."
            )
        return worst


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
