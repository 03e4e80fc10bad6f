"""Where the pieces of a transformer live, found from the loaded model, and all family-specific code.

`discover(base)` reads a headless transformers model (the `AutoModel` of any family) and returns
a `Family`: the layer list, the modules before it (embeddings) and after it (final norm, pooler),
each layer's attention module, the projections that end its attention and MLP blocks (where the
Houlsby adapter goes), LoRA's target projections and the pooling rule. It follows transformers'
own conventions and one traced forward of a few dummy tokens:

- the layer list is the `nn.ModuleList` of `config.num_hidden_layers` blocks of one class (the
  class `_no_split_modules` names, where the model names one: accelerate's rule for the repeated
  block);
- modules that run before layer 0 are the embeddings, those that run after the last layer are the
  final norm chain, and a module named `pooler` the pooler (used only where the family's own
  `...ForSequenceClassification` keeps it);
- the attention module is the deepest module of a layer whose class is an attention class and
  that holds the layer's first projection; the attention block is the layer's child holding it,
  and the last projection (Linear or GPT-2's Conv1D) called inside that block ends it; the last
  projection called in the layer outside that block ends the MLP; a mixture-of-experts block
  (a module holding `experts`) ends at the block itself, and where dense and expert layers mix
  (each layer is read), every layer's MLP ends at its whole block;
- a block is parallel (x + attn(x) + mlp(x)) when noise added to the attention block's output
  leaves the MLP's input unchanged (Phi, CodeGen, Cohere and GPT-J have no config flag for it);
- LoRA targets the query and value projections, or the fused q/k/v projection (what `peft`
  defaults to per family; the tests check both agree);
- pooling follows what the model computes: a causal model (changing the last token leaves the
  earlier positions unchanged) pools its last real token, a bidirectional encoder its first.

`OVERRIDES` holds what discovery cannot decide, one commented row each. `Family.pooled_path` names
the family's pooled-token last layer, which `olft.pooledlayer` runs (`_POOLED_BY_TYPE` here says
which families have a written-out path there).
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from olft.errors import OlftError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """Where the pieces of one model live, relative to the base (headless) model.

    Paths are dotted module names: `layers`, `embeddings`, `final_norm`, `after`, `pooler` inside
    the base model; `attn`, `attn_out`, `mlp_out`, `mlp`, `mlp_in` inside one layer.
    """

    name: str  # config.model_type
    model_types: tuple[str, ...]  # model types this description applies to
    layers: str  # the nn.ModuleList of transformer layers
    embeddings: tuple[str, ...]  # modules run before layer 0 (kept in eval mode: frozen, deterministic)
    final_norm: str | None  # first module applied after the last layer (None: the layers end the stack)
    pooler: str | None  # module applied to the pooled token (BERT's dense + tanh), frozen
    pooling: str  # "last": last real token (causal models); "cls": first token ([CLS], encoders)
    attn: str  # attention module of a layer (prefix tuning attaches here)
    attn_out: str  # projection that ends the attention block (Houlsby adapter after it)
    mlp_out: str  # projection (MoE, or dense and MoE layers mixed: the whole block) that ends the MLP block (adapter after it)
    lora_targets: tuple[str, ...]  # module names LoRA adapts (query and value, or fused q/k/v)
    layers_pattern: str  # last component of `layers`, as `peft` wants it
    after: tuple[str, ...] = ()  # every module applied after the last layer, in order (final_norm first)
    mlp: str = ""  # the MLP block (a layer child; MoE: the sparse expert block)
    mlp_in: str = ""  # the layer child that first reads the attention block's output for the MLP
    moe: bool = False  # the MLP is a mixture of experts (in some layers, where dense and expert layers mix)
    parallel_block: bool = False  # attention and MLP read the same input, their outputs are summed
    causal: bool = True  # each position sees only earlier ones
    attention_interface: bool = True  # attention goes through transformers' ALL_ATTENTION_FUNCTIONS
    layer_output: int = 0  # what a layer returns: 0 a tensor, k a tuple of k items (hidden first)
    pooled_path: str = "generic"  # pooled-token last layer: a name in `pooledlayer.POOLED_LAYERS`
    overrides: tuple[str, ...] = field(default=(), compare=False)  # OVERRIDES rows applied

    def describe(self) -> dict[str, Any]:
        """Plain dict of the discovered structure (what `olft info` prints)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


# What discovery cannot decide, one row per exception: model_type -> fields to set, and why.
OVERRIDES: dict[str, dict[str, Any]] = {
    # DeBERTa's disentangled attention computes its scores itself (relative-position terms),
    # not through transformers' attention functions: prefix tuning cannot attach to it.
    "deberta-v2": {"attention_interface": False},
    "deberta": {"attention_interface": False},
}

_PROJECTIONS = ("Linear", "Conv1D")  # class names of the projections (GPT-2 uses Conv1D)
_QUERY = ("q_proj", "query", "q_lin", "query_proj", "q", "wq")
_VALUE = ("v_proj", "value", "v_lin", "value_proj", "v", "wv")
# Layers whose pooled-token path is written out (`olft.pooledlayer`: query and output projection at one token).
_POOLED_BY_TYPE = {"llama": "rotary", "mistral": "rotary", "qwen2": "rotary", "gpt2": "gpt2", "bert": "bert",
                   "roberta": "bert", "electra": "bert"}  # fmt: skip


def _is_projection(module: nn.Module) -> bool:
    return type(module).__name__ in _PROJECTIONS or isinstance(module, nn.Linear)


def text_config(config):
    """The language part of a config (multimodal configs nest it)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def no_segment_ids(config) -> bool:
    """Whether the model takes no segment ids (token_type_ids) from olft: fewer than two segment
    embeddings (type_vocab_size 0 or 1). A BERT-style tokenizer marks a pair's second text 1, an
    index such an embedding does not have (IndexError); without them the model reads segment 0,
    its only one. `Stack.set_model_inputs` and the export's usage code (`export.usage_text`) both
    follow it."""
    segments = getattr(text_config(config), "type_vocab_size", None)
    return segments is not None and segments < 2


def _unsupported(what: str, model_type: str) -> OlftError:
    """OlftError for a model whose structure discovery cannot read: `what` was not found; the
    message names the family and what to do, since no flag of olft's can help."""
    return OlftError(f"{what} olft's layer discovery does not support this model family ({model_type}): use a model "
                     "of a family the README lists as tested (see Models), or open an issue naming the model.")


def find_layers(base: nn.Module) -> str:
    """Path of the ModuleList of `num_hidden_layers` same-class blocks (the repeated block)."""
    n = getattr(text_config(base.config), "num_hidden_layers", None)
    no_split = set(getattr(base, "_no_split_modules", None) or ())
    found = []
    for path, module in base.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        kinds = {type(m).__name__ for m in module}
        if len(kinds) != 1 or (n is not None and len(module) != n):
            continue
        params = sum(p.numel() for p in module.parameters())
        found.append((kinds.pop() in no_split, params, path))
    if not found:
        shared = getattr(text_config(base.config), "num_hidden_groups", None)  # ALBERT: groups of layers reused
        why = (f" It reuses {shared} set(s) of layer weights for all {n} layers (cross-layer sharing, as ALBERT does), so no "
               "layer has weights of its own to tune alone." if shared is not None and n is not None and shared < n else "")
        model_type = getattr(base.config, "model_type", type(base).__name__)
        raise OlftError(
            f"Could not find the layer list of {type(base).__name__} ({model_type}): no ModuleList of its {n} layers.{why} "
            "olft runs models whose transformer layers form one list of distinct blocks (as most transformers models "
            "with a sequence-classification class do): use a model of a family the README lists as tested (see Models)."
        )
    return max(found)[2]


@dataclass
class _Trace:
    """Call order of every module during one forward: (start, end) counters by path."""

    start: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    layer_output: Any = None


def _dummy_inputs(base: nn.Module, length: int = 8) -> torch.Tensor:
    vocab = getattr(text_config(base.config), "vocab_size", 100) or 100
    ids = torch.arange(length) % max(1, vocab - 5) + 3  # avoid the low special ids
    return ids.view(1, length).to(base.get_input_embeddings().weight.device)


@torch.no_grad()
def _trace(base: nn.Module, layers: nn.ModuleList, ids: torch.Tensor) -> tuple[_Trace, torch.Tensor]:
    trace, counter, handles = _Trace(), [0], []

    def pre(name):
        def hook(_m, _a):
            counter[0] += 1
            trace.start.setdefault(name, counter[0])

        return hook

    def post(name):
        def hook(_m, _a, out):
            counter[0] += 1
            trace.end[name] = counter[0]
            if name == "\0layer0" and trace.layer_output is None:
                trace.layer_output = out

        return hook

    for name, module in base.named_modules():
        handles += [module.register_forward_pre_hook(pre(name)), module.register_forward_hook(post(name))]
    handles += [layers[0].register_forward_hook(post("\0layer0"))]
    try:
        out = base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return trace, out[0]


def _side_modules(base: nn.Module, layers_path: str) -> list[str]:
    """Modules of `base` outside the layer list that do not contain it (top-most such modules)."""
    out, stack = [], [("", base)]
    while stack:
        prefix, module = stack.pop()
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if path == layers_path:
                continue
            if layers_path.startswith(path + "."):
                stack.append((path + ".", child))
            else:
                out.append(path)
    return out


def _is_causal(base: nn.Module, ids: torch.Tensor) -> bool:
    """Whether changing the last token leaves every earlier position's output unchanged."""
    with torch.no_grad():
        a = base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)[0]
        changed = ids.clone()
        changed[0, -1] = ids[0, 0]
        b = base(input_ids=changed, attention_mask=torch.ones_like(ids), use_cache=False)[0]
    return bool(torch.allclose(a[:, :-1], b[:, :-1], atol=1e-5, rtol=1e-4))


def head_keeps_pooler(base: nn.Module, pooler: str) -> bool:
    """Whether the family's own sequence classifier keeps the pooler (BERT does, RoBERTa does not).

    Built on the meta device from the config (no weights, no memory); without such a class the
    pooler is kept when the model has one.
    """
    from transformers import AutoModelForSequenceClassification

    try:
        with torch.device("meta"):
            cls = AutoModelForSequenceClassification.from_config(base.config)
    except Exception:  # no sequence-classification class, or it cannot be built on meta
        return True
    inner = getattr(cls, cls.base_model_prefix, cls)
    try:
        inner.get_submodule(pooler)
    except AttributeError:
        return False
    return inner.get_submodule(pooler) is not None


def _attention(layer: nn.Module, first_projection: str, model_type: str) -> str:
    """Deepest attention-class module of the layer holding its first-called projection."""
    best = None
    for path, module in layer.named_modules():
        if not path or "attention" not in type(module).__name__.lower():
            continue
        if first_projection.startswith(path + "."):
            if best is None or path.count(".") > best.count("."):
                best = path
    if best is None:  # a block with no attention-class module at all was refused before (`check_structure`)
        raise _unsupported(f"Could not find the attention module of {type(layer).__name__} (no attention-class module "
                           "holds its first projection):", model_type)
    return best


def _lora_targets(called: list[str]) -> tuple[str, ...]:
    """Query and value projections, else the first projection called (the fused q/k/v)."""
    names = [p.rsplit(".", 1)[-1] for p in called]
    q = next((n for n in names if n in _QUERY), None)
    v = next((n for n in names if n in _VALUE), None)
    if q and v:
        return (q, v)
    return (names[0],) if names else ()


def _uses_interface(attn: nn.Module) -> bool:
    try:
        source = inspect.getsource(type(attn).forward)
    except (OSError, TypeError):
        return False
    return "ALL_ATTENTION_FUNCTIONS" in source or "attention_interface" in source


def _outside(base: nn.Module, layers_path: str, n: int, trace: _Trace) -> dict[str, Any]:
    """Embeddings (run before layer 0), the modules after the last layer, and the pooler."""
    first, last = trace.start[f"{layers_path}.0"], trace.end[f"{layers_path}.{n - 1}"]
    side = [p for p in _side_modules(base, layers_path) if p in trace.start]
    embeddings = tuple(sorted((p for p in side if trace.end[p] < first), key=trace.start.get))
    after = [p for p in sorted(side, key=trace.start.get) if trace.start[p] > last]
    pooler = next((p for p in after if p.rsplit(".", 1)[-1] == "pooler"), None)
    after = tuple(p for p in after if p != pooler)
    if pooler is not None and not head_keeps_pooler(base, pooler):
        pooler = None
    return {"embeddings": embeddings, "after": after, "final_norm": after[0] if after else None, "pooler": pooler}


def _mlp_block(layer: nn.Module, rest: list[str], model_type: str) -> dict[str, Any]:
    """The MLP block of one layer: `mlp`, `mlp_in`, `mlp_out`, `moe`.

    `rest`: the layer's projections called outside its attention block, in call order.
    """
    experts = [p for p, _ in layer.named_modules() if p.rsplit(".", 1)[-1] == "experts"]
    if experts:  # mixture of experts: the adapter follows the whole expert block
        mlp = mlp_out = mlp_in = experts[0].split(".")[0]
    elif rest:
        mlp_out = rest[-1]
        mlp, mlp_in = mlp_out.split(".")[0], rest[0].split(".")[0]
    else:
        raise _unsupported(f"Could not find the MLP of {type(layer).__name__} (no projection after its attention block):",
                           model_type)
    return {"mlp_out": mlp_out, "mlp": mlp, "mlp_in": mlp_in, "moe": bool(experts)}


def _mixed_mlps(layers: nn.ModuleList, called: list[list[str]], inside: dict[str, Any], model_type: str) -> dict[str, Any]:
    """What replaces layer 0's MLP fields when the layers' MLPs differ, else nothing.

    Models mixing dense and mixture-of-experts layers (DeepSeek-V3's first `first_k_dense_replace`
    layers, Qwen2-MoE's `decoder_sparse_step` and `mlp_only_layers`) have no one output projection:
    a dense layer's `mlp.down_proj` is not in an expert block. The adapter then follows the whole
    MLP block on every layer, as on an all-experts model; for a dense MLP that is its output
    projection's output. Where the block is not the same child in every layer, or some layer's
    cannot be found, `mlp_out` is empty (the adapter is refused, naming the methods that fit).
    """
    attn_block = inside["attn"].split(".")[0] + "."

    def kind(layer: nn.Module, projections: list[str]) -> dict[str, Any] | None:
        try:
            return _mlp_block(layer, [p for p in projections if not p.startswith(attn_block)], model_type)
        except OlftError:  # layer 0's was found: LoRA and prefix still fit the model
            return None

    kinds = [kind(layer, c) for layer, c in zip(layers, called, strict=True)]
    if all(k == kinds[0] for k in kinds):
        return {}
    blocks = {k["mlp"] if k else "" for k in kinds}
    mlp = blocks.pop() if len(blocks) == 1 else ""
    return {"mlp_out": mlp, "mlp": mlp or inside["mlp"], "mlp_in": mlp or inside["mlp_in"], "moe": any(k and k["moe"] for k in kinds)}


def _inside(layer: nn.Module, called: list[str], model_type: str) -> dict[str, Any]:
    """Attention module, the projections ending attention and MLP, the MLP block, LoRA targets.

    `called`: the layer's projections (paths inside it) in the order the forward called them.
    """
    if not called:
        raise _unsupported(f"{type(layer).__name__} calls no Linear projection, so olft cannot place modules in it:", model_type)
    attn = _attention(layer, called[0], model_type)
    block = attn.split(".")[0]
    in_attn = [p for p in called if p.startswith(block + ".")]
    rest = [p for p in called if not p.startswith(block + ".")]
    return {
        "attn": attn,
        "attn_out": in_attn[-1],
        **_mlp_block(layer, rest, model_type),
        "lora_targets": _lora_targets([p for p in in_attn if p.startswith(attn + ".")]),
        "attention_interface": _uses_interface(layer.get_submodule(attn)),
    }


@torch.no_grad()
def _is_parallel(base: nn.Module, layer: nn.Module, ids: torch.Tensor, attn_block: str, mlp_in: str) -> bool | None:
    """Whether the layer's MLP reads an input that its attention block's output does not reach
    (x + attn(x) + mlp(x): GPT-NeoX, GPT-J, Falcon, Phi, CodeGen, Cohere): noise added to the
    attention block's output leaves the MLP's input as it was. None when that cannot be run."""
    seen: list[torch.Tensor] = []

    def record(_m, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states")
        if torch.is_tensor(x):
            seen.append(x.clone())

    def noise(_m, _a, out):
        first = out[0] if isinstance(out, tuple) else out
        moved = first + torch.randn(first.shape, generator=torch.Generator().manual_seed(0)).to(first)
        return (moved, *out[1:]) if isinstance(out, tuple) else moved

    was_training = base.training
    base.eval()
    handles = [layer.get_submodule(mlp_in).register_forward_pre_hook(record, with_kwargs=True)]
    try:
        base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
        handles.append(layer.get_submodule(attn_block).register_forward_hook(noise))
        base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    except Exception:  # a layer this probe does not fit: the config's flags say instead
        return None
    finally:
        for h in handles:
            h.remove()
        base.train(was_training)
    if len(seen) != 2:  # the MLP block called other than once per forward
        return None
    return seen[0].shape == seen[1].shape and torch.equal(seen[0], seen[1])


def _called(base: nn.Module, trace: _Trace, prefix: str) -> list[str]:
    """The projections inside the layer at `prefix` (paths relative to it), in the order the forward called them."""
    return sorted(
        (p[len(prefix) :] for p in trace.start if p.startswith(prefix) and _is_projection(base.get_submodule(p))),
        key=lambda p: trace.start[prefix + p],
    )


def check_structure(base: nn.Module) -> str:
    """The layer list's path (`find_layers`) of a headless transformers model olft can tune, from
    its module tree alone: no forward runs, so a model built on the meta device from its config
    (no weight read or allocated) will do, and `loading.load_stack` asks this before the tokenizer
    and weights load, whose refusals would otherwise come first and only lead to this one.

    Raises OlftError for an encoder-decoder model, no layer list, and a repeated block with no
    attention module (a state-space or recurrent model: no transformer).
    """
    # A saved encoder half (T5EncoderModel) reloads as the whole encoder-decoder with the flag
    # off: the two stacks say what the config no longer does.
    two_stacks = isinstance(getattr(base, "encoder", None), nn.Module) and isinstance(getattr(base, "decoder", None), nn.Module)
    if getattr(base.config, "is_encoder_decoder", False) or two_stacks:
        saved = (getattr(base.config, "architectures", None) or [type(base).__name__])[0]
        # A folder saved as T5EncoderModel names that class, which transformers' AutoModel loads as the whole T5Model.
        as_saved = "" if saved == type(base).__name__ else f" (the folder was saved as {saved}; transformers loads it as {type(base).__name__})"
        raise OlftError(
            f"{type(base).__name__} is an encoder-decoder model{as_saved}: olft tunes one stack of layers and supports "
            "encoder-only and decoder-only models (any with a sequence-classification class of that kind)."
        )
    layers_path = find_layers(base)
    layer = base.get_submodule(layers_path)[0]
    if not any("attention" in type(m).__name__.lower() for m in layer.modules()):
        # A block without any attention (Mamba's state-space mixer, RWKV's time mixing) is no transformer
        # layer: say so, rather than that discovery missed one.
        model_type = getattr(base.config, "model_type", type(base).__name__)
        raise OlftError(f"{type(layer).__name__}, the repeated block of this {model_type} model, has no attention module: "
                        "olft tunes transformer layers (self-attention and MLP), and this family is not a transformer "
                        "(a state-space or recurrent model), so it cannot be tuned. Use a transformer model (see the "
                        "README's Models).")
    return layers_path


def discover(base: nn.Module) -> Family:
    """The `Family` of a headless transformers model, found from its module tree and one forward.

    Raises OlftError for what `check_structure` refuses, and when no attention module or
    projections can be found or the model cannot run on token ids alone.
    """
    layers_path = check_structure(base)
    layers = base.get_submodule(layers_path)
    ids = _dummy_inputs(base)
    was_training = base.training
    base.eval()
    try:
        trace, _ = _trace(base, layers, ids)
        causal = _is_causal(base, ids)
    except Exception as exc:  # a forward that needs more than token ids (multimodal, ...)
        raise OlftError(
            f"{type(base).__name__} did not run on token ids and an attention mask alone "
            f"({type(exc).__name__}: {exc}): olft supports text models that do."
        ) from exc
    finally:
        base.train(was_training)
    called = [_called(base, trace, f"{layers_path}.{i}.") for i in range(len(layers))]
    config = text_config(base.config)
    model_type = getattr(base.config, "model_type", type(base).__name__)
    out = trace.layer_output
    inside = _inside(layers[0], called[0], model_type)
    inside.update(_mixed_mlps(layers, called, inside, model_type))
    parallel = _is_parallel(base, layers[0], ids, inside["attn"].split(".")[0], inside["mlp_in"])
    if parallel is None:  # the configs of GPT-NeoX, StableLM and Falcon say so
        parallel = bool(getattr(config, "use_parallel_residual", False) or getattr(config, "parallel_attn", False))
    family = Family(
        name=model_type,
        model_types=(model_type,),
        layers=layers_path,
        pooling="last" if causal else "cls",
        layers_pattern=layers_path.rsplit(".", 1)[-1],
        parallel_block=parallel,
        causal=causal,
        layer_output=len(out) if isinstance(out, tuple) else 0,
        pooled_path=_POOLED_BY_TYPE.get(model_type, "generic"),
        **_outside(base, layers_path, len(layers), trace),
        **inside,
    )
    rows = OVERRIDES.get(model_type)
    if rows:
        family = replace(family, **rows, overrides=tuple(rows))
    return family
