"""Prefix tuning: exact parameter counts, placement on the chosen layers only, equivalence with a
hand-written attention over [prefix; keys], identity at length 0 and after removal, gradients,
folding of the reparameterised prefix, and suffix execution from cached hidden states."""

import copy
import re

import pytest
import torch
from transformers import AutoModel, GPT2Config, LlamaConfig
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from olft.backbone import Stack, get_submodule
from olft.errors import OlftError
from olft.families import discover
from olft.loading import load_stack
from olft.methods.prefix import PrefixKV, apply_prefix
from tiny import ARCHITECTURES, make_config, prefix_refused

FAMS = ("gpt2", "llama", "mistral", "bert")
IMPLS = ("eager", "sdpa")
LENGTHS = [7, 5, 3]  # right padding: olft's layout


def _batch(padding: str = "right", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids from the tiny vocabulary with a right-, left- or un-padded mask."""
    g = torch.Generator().manual_seed(seed)
    lengths = [7, 7, 7] if padding == "none" else LENGTHS
    n = max(lengths)
    ids = torch.randint(4, 60, (len(lengths), n), generator=g)
    mask = torch.zeros(len(lengths), n, dtype=torch.long)
    for row, k in enumerate(lengths):
        if padding == "left":
            mask[row, n - k :] = 1
        else:
            mask[row, :k] = 1
    return ids, mask


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared, busy machine torch's spinning
    worker threads slow this file several-fold; the setting is restored for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_LOADED: dict[tuple[str, str], Stack] = {}


def _load(model_dirs, family: str, attn: str) -> Stack:
    """A fresh copy of the tiny stack (loaded once per family and attention implementation)."""
    key = (family, attn)
    if key not in _LOADED:
        _LOADED[key] = load_stack(str(model_dirs[family]), 2, attn_implementation=attn)[0]
    return copy.deepcopy(_LOADED[key]).eval()


def _meta_stack(config) -> Stack:
    """A stack with weights on the meta device: real shapes, no memory or init time. Its structure
    is discovered on a 2-layer, 64-wide model of the same class (a forward cannot run on meta)."""
    small = copy.deepcopy(config)
    small.hidden_size, small.num_hidden_layers = 64, 2
    if hasattr(small, "intermediate_size"):
        small.intermediate_size = 64
    if hasattr(small, "num_key_value_heads"):
        small.num_key_value_heads = small.num_attention_heads = 4
    else:
        small.num_attention_heads = 4
    family = discover(AutoModel.from_config(small).eval())
    with torch.device("meta"):
        base = AutoModel.from_config(config)
        return Stack(base, family, 2)


# -- parameter counts ----------------------------------------------------------------------------
def test_count_llama2_7b_shape():
    config = LlamaConfig(hidden_size=4096, num_attention_heads=32, num_key_value_heads=32, intermediate_size=64,
                         num_hidden_layers=2, vocab_size=64)  # fmt: skip
    applied = apply_prefix(_meta_stack(config), [1], length=5)
    assert applied.num_params == 40_960 and applied.train_only_params == 0


def test_count_gpt2_large_width():
    applied = apply_prefix(
        _meta_stack(GPT2Config(n_layer=2, n_embd=1280, n_head=20, vocab_size=16, n_positions=16)), [0]
    )
    assert applied.num_params == 12_800


def test_count_gqa_uses_kv_heads():
    config = make_config("llama")  # 4 query heads, 2 key/value heads, head_dim 8
    stack = Stack(AutoModel.from_config(config), num_labels=2)
    applied = apply_prefix(stack, [2], length=3)
    assert applied.num_params == 2 * 3 * config.num_key_value_heads * 8 == 96
    assert applied.params["layers.2.self_attn.prefix.key"].shape == (2, 3, 8)


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("layers", [[0], [0, 3]])
def test_only_chosen_layers_hold_params(model_dirs, family, layers):
    stack = _load(model_dirs, family, "sdpa")
    applied = apply_prefix(stack, layers)
    trainable = [n for n, p in stack.base.named_parameters() if p.requires_grad]
    assert sorted(trainable) == sorted(applied.params)
    found = {int(re.search(rf"{re.escape(stack.family.layers)}\.(\d+)\.", n).group(1)) for n in trainable}
    assert found == set(layers)
    config = stack.base.config
    for i in range(stack.num_layers):
        attn = get_submodule(stack.layers[i], stack.family.attn)
        assert (attn.config is config) == (i not in layers)
    applied.remove()
    assert all(get_submodule(layer, stack.family.attn).config is config for layer in stack.layers)
    assert not any("prefix" in n for n, _ in stack.base.named_parameters())
    assert config._attn_implementation == "sdpa"


# -- identity and removal ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("attn", IMPLS)
def test_zero_length_and_removal_are_exact(model_dirs, family, attn):
    stack = _load(model_dirs, family, attn)
    ids, mask = _batch()
    with torch.no_grad():
        base = stack(ids, mask)
        applied = apply_prefix(stack, [1], length=0)
        assert torch.equal(stack(ids, mask), base)
        applied.remove()
        applied = apply_prefix(stack, [1], length=4)
        assert not torch.allclose(stack(ids, mask), base)
        applied.remove()
        assert torch.equal(stack(ids, mask), base)


@pytest.mark.parametrize("family", ("gpt2", "llama"))
def test_only_layer_i_onwards_changes(model_dirs, family):
    stack, layer = _load(model_dirs, family, "sdpa"), 2
    ids, mask = _batch()
    seen: dict[str, list[torch.Tensor]] = {}

    def record(name):
        def hook(_m, args, kwargs, out=None):
            value = out if out is not None else (args[0] if args else kwargs["hidden_states"])
            seen.setdefault(name, []).append((value[0] if isinstance(value, tuple) else value).detach().clone())

        return hook

    attn = get_submodule(stack.layers[layer], stack.family.attn)
    handles = [stack.layers[i].register_forward_pre_hook(record(f"in{i}"), with_kwargs=True) for i in range(layer + 1)]
    handles.append(attn.register_forward_hook(record("attn"), with_kwargs=True))
    with torch.no_grad():
        stack(ids, mask)
        calls = {name: len(values) for name, values in seen.items()}  # a forward may call a layer twice
        applied = apply_prefix(stack, [layer])
        stack(ids, mask)
    for h in handles:
        h.remove()
    applied.remove()
    for name, values in seen.items():
        assert len(values) == 2 * calls[name]
        before, after = values[: calls[name]], values[calls[name] :]
        same = all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        assert same != (name == "attn"), name


# -- equivalence with a hand-written reference -----------------------------------------------------
def _reference(stack: Stack, attn, hidden, kwargs, mask2d, pk, pv) -> torch.Tensor:
    """Attention output of `attn` over [prefix; keys], written out: no rotary on the prefix,
    GQA by repeating key/value heads, causal + padding mask on real keys, prefix always visible."""
    fam = stack.family.name
    b, n, _ = hidden.shape
    d = pk.shape[-1]
    if fam == "gpt2":
        q, k, v = attn.c_attn(hidden).split(attn.split_size, dim=2)
    elif fam == "falcon":  # multi-query: one fused projection, all query heads then one key and one value
        q, k, v = attn.query_key_value(hidden).view(b, n, -1, d).split([attn.num_heads, 1, 1], dim=2)
    elif fam == "bert":
        q, k, v = attn.query(hidden), attn.key(hidden), attn.value(hidden)
    else:
        q, k, v = attn.q_proj(hidden), attn.k_proj(hidden), attn.v_proj(hidden)
    q, k, v = (t.view(b, n, -1, d).transpose(1, 2) for t in (q, k, v))
    if fam in ("llama", "mistral") or (fam == "falcon" and not attn.config.alibi):
        q, k = apply_rotary_pos_emb(q, k, *kwargs["position_embeddings"])
    k = torch.cat([pk.expand(b, -1, -1, -1), k], dim=2).repeat_interleave(q.shape[1] // pk.shape[0], dim=1)
    v = torch.cat([pv.expand(b, -1, -1, -1), v], dim=2).repeat_interleave(q.shape[1] // pk.shape[0], dim=1)
    keep = mask2d.bool()[:, None, None, :].expand(b, 1, n, n)
    if fam != "bert":
        keep = keep & torch.ones(n, n, dtype=torch.bool).tril()
    keep = torch.cat([torch.ones(b, 1, n, pk.shape[1], dtype=torch.bool), keep], dim=-1)
    scores = (q @ k.transpose(-1, -2)) * d**-0.5
    out = scores.masked_fill(~keep, float("-inf")).softmax(-1) @ v
    out = out.transpose(1, 2).reshape(b, n, -1)
    if fam == "gpt2":
        return attn.c_proj(out)
    if fam == "falcon":
        return attn.dense(out)
    return out if fam == "bert" else attn.o_proj(out)


@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("attn_impl", IMPLS)
@pytest.mark.parametrize("padding", ["right", "left", "none"])  # "none": SDPA gets no mask (is_causal)
def test_matches_reference(model_dirs, family, attn_impl, padding):
    _assert_matches_reference(_load(model_dirs, family, attn_impl), padding)


@pytest.mark.skipif("falcon" in prefix_refused(), reason="Falcon computes attention itself before transformers 5.25")
@pytest.mark.parametrize("attn_impl", IMPLS)
@pytest.mark.parametrize("padding", ["right", "left", "none"])
def test_falcon_matches_reference(attn_impl, padding):
    """FalconAttention calls the attention interface from transformers 5.25 on: its fused
    multi-query projection and rotary keys then get the prefix as the other families do."""
    from tiny import build_model

    base, _ = build_model("falcon", attn=attn_impl)
    stack = Stack(base, None, 2)
    stack.freeze_base()
    _assert_matches_reference(stack.eval(), padding)


def _assert_matches_reference(stack: Stack, padding: str, layer: int = 1) -> None:
    """The prefixed layer's attention output equals `_reference` on the hidden states it got."""
    ids, mask = _batch(padding)
    applied = apply_prefix(stack, [layer], length=3)
    attn = get_submodule(stack.layers[layer], stack.family.attn)
    captured = {}

    def pre(_m, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["kwargs"] = kwargs

    def post(_m, _args, out):
        captured["out"] = out[0]

    handles = [attn.register_forward_pre_hook(pre, with_kwargs=True), attn.register_forward_hook(post)]
    with torch.no_grad():
        logits = stack(ids, mask)
        pk, pv = attn.prefix()
        ref = _reference(stack, attn, captured["hidden"], captured["kwargs"], mask, pk, pv)
    for h in handles:
        h.remove()
    applied.remove()
    assert torch.isfinite(logits).all()
    real = mask.bool()  # padded query rows are never read
    torch.testing.assert_close(captured["out"][real], ref[real], rtol=1e-5, atol=1e-5)


# -- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMS)
def test_gradients_reach_only_prefix_and_head(model_dirs, family):
    stack = _load(model_dirs, family, "sdpa")
    applied = apply_prefix(stack, [2])
    ids, mask = _batch()
    stack(ids, mask).square().sum().backward()
    prefix_ids = {id(p) for p in applied.params.values()}
    for name, p in stack.base.named_parameters():
        if id(p) in prefix_ids:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(p.grad is not None for p in stack.head.parameters())
    applied.remove()


@pytest.mark.parametrize("attn", IMPLS)
def test_reparam_folds_to_plain_vectors(model_dirs, attn):
    stack = _load(model_dirs, "llama", attn)
    ids, mask = _batch()
    applied = apply_prefix(stack, [1, 3], length=4, reparam=True, hidden=16)
    assert sorted(applied.params) == sorted(
        f"layers.{i}.self_attn.prefix.{n}" for i in (1, 3)
        for n in ("embedding", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
    )  # fmt: skip
    per_layer = 4 * 32 + (32 * 16 + 16) + (16 * 2 * 2 * 8 + 2 * 2 * 8)
    assert applied.train_only_params == 2 * per_layer
    assert applied.num_params == 2 * (2 * 4 * 2 * 8)
    state = applied.state_dict()
    assert sorted(state) == sorted(f"layers.{i}.self_attn.prefix.{kv}" for i in (1, 3) for kv in ("key", "value"))
    assert all(t.shape == (2, 4, 8) and not t.requires_grad for t in state.values())
    with torch.no_grad():
        trained = stack(ids, mask)
    applied.remove()
    for reparam in (False, True):  # saved vectors load into either mode and give the same logits
        applied = apply_prefix(stack, [1, 3], length=4, reparam=reparam, hidden=16)
        applied.load_state_dict(state)
        with torch.no_grad():
            torch.testing.assert_close(stack(ids, mask), trained, rtol=0, atol=1e-6)
        applied.remove()


def test_load_rejects_wrong_shape_and_missing(model_dirs):
    stack = _load(model_dirs, "gpt2", "eager")
    applied = apply_prefix(stack, [0], length=2)
    with pytest.raises(KeyError):
        applied.load_state_dict({})
    bad = {k: torch.zeros(1, 2, 3) for k in applied.state_dict()}
    with pytest.raises(OlftError, match=r"Saved prefix has shape \(1, 2, 3\), this model's layer needs"):
        applied.load_state_dict(bad)
    applied.remove()


# -- suffix execution ----------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("attn", IMPLS)
def test_from_cached_hidden_states(model_dirs, family, attn):
    stack, layer = _load(model_dirs, family, attn), 2
    ids, mask = _batch()
    applied = apply_prefix(stack, [layer])
    with torch.no_grad():
        full = stack(ids, mask)
        hidden = stack.hidden_entering(ids, mask, layer)
        suffix = stack(ids, mask, start=layer, hidden=hidden)
    applied.remove()
    torch.testing.assert_close(suffix, full, rtol=0, atol=1e-6)


def test_prefix_module_shapes():
    plain, reparam = PrefixKV(5, 2, 8, 32), PrefixKV(5, 2, 8, 32, reparam=True, hidden=12)
    for module in (plain, reparam):
        key, value = module()
        assert key.shape == value.shape == (2, 5, 8)
        assert module.folded_numel == 160


# -- every architecture of the matrix ------------------------------------------------------------
def _matrix_stack(name: str) -> Stack:
    from tiny import build_model

    base, _ = build_model(name)
    stack = Stack(base, None, 2)
    stack.freeze_base()
    return stack.eval()


@pytest.mark.parametrize("name", [n for n in ARCHITECTURES if n not in prefix_refused()])
def test_matrix_prefix_reaches_attention(name):
    """Length 0 is exactly the base model; a real prefix changes the chosen layer's attention
    output (so the prefix is not silently bypassed) and nothing below it."""
    stack = _matrix_stack(name)
    ids, mask = _batch()
    layer = stack.num_layers // 2
    below = {}
    handle = stack.layers[layer].register_forward_pre_hook(
        lambda _m, a, k: below.setdefault("in", []).append((a[0] if a else k["hidden_states"]).clone()), with_kwargs=True
    )
    with torch.no_grad():
        base = stack(ids, mask)
        applied = apply_prefix(stack, [layer], length=0)
        assert torch.equal(stack(ids, mask), base)
        applied.remove()
        applied = apply_prefix(stack, [layer], length=3)
        with_prefix = stack(ids, mask)
        applied.remove()
        assert torch.equal(stack(ids, mask), base)
    handle.remove()
    assert not torch.allclose(with_prefix, base)
    n = len(below["in"]) // 4  # four forwards, each calling the layer n times
    assert all(torch.equal(below["in"][i], below["in"][i + 2 * n]) for i in range(n))


@pytest.mark.parametrize("name", prefix_refused())
def test_matrix_prefix_refused_where_attention_bypasses_the_interface(name):
    from olft.errors import OlftError

    stack = _matrix_stack(name)
    with pytest.raises(OlftError, match="computes attention itself"):
        apply_prefix(stack, [1])
    assert not any(hasattr(m, "prefix") for m in stack.modules())


def test_prefix_refused_where_keys_or_values_are_not_head_dim_wide():
    """Multi-head latent attention (DeepSeek-V3): keys qk_nope + qk_rope wide, values v_head_dim,
    config.head_dim the rotary part alone. Refused whole, before any layer changes."""
    from tiny import mixed_moe_config

    config = mixed_moe_config("deepseek_v3")
    config.qk_nope_head_dim = 8  # keys 12 wide, values 8, head_dim 4
    torch.manual_seed(0)
    stack = Stack(AutoModel.from_config(config).eval(), None, 2)
    with pytest.raises(OlftError, match=r"heads' width \(4 here\), but DeepseekV3Attention \(deepseek_v3\) builds keys 12 "
                                        r"wide and values 8 wide .*Use --method adapter or --method lora"):
        apply_prefix(stack, [0, 1])
    assert not any(hasattr(m, "prefix") for m in stack.modules())
