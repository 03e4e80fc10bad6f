"""The activation cache and the pooled-token last layer are exact.

For every family and PEFT method: cached logits and gradients equal the plain forward's (with
padding in the batch, the cache built at another batch size), a short training run ends with the
same weights, a cache advanced layer by layer equals one built directly, disk storage equals
memory storage, and when there is no room the plain forward runs instead.
"""

from __future__ import annotations

import copy
import logging
import random

import pytest
import torch

from olft import cache as cache_mod
from olft.backbone import Stack
from olft.cache import ActivationCache, CacheUnavailable, build_caches, plan_cache
from olft.config import MethodConfig
from olft.data import Encoded, collate, train_order
from olft.loading import load_stack
from olft.methods import apply_method
from olft.train import fit, logits_for
from tiny import assert_cached_matches_plain

FAMS = ("gpt2", "llama", "mistral", "bert")
TOL = dict(rtol=1e-5, atol=1e-5)

_LOADED: dict[tuple[str, str], Stack] = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models gain nothing from threads; the setting is restored for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _stack(model_dirs, family: str, attn: str = "sdpa") -> Stack:
    """A fresh copy of the tiny 4-layer stack (loaded once per family and attention kernel)."""
    if (family, attn) not in _LOADED:
        _LOADED[(family, attn)] = load_stack(str(model_dirs[family]), 2, attn_implementation=attn)[0]
    return copy.deepcopy(_LOADED[(family, attn)]).eval()


def _enc(stack: Stack, n: int = 14, seed: int = 0) -> Encoded:
    """Random examples of 2 to 9 tokens (so batches are padded), labels 0/1."""
    rng = random.Random(seed)
    pad = stack.base.config.pad_token_id
    ids = [[rng.randrange(4, 60) for _ in range(rng.randint(2, 9))] for _ in range(n)]
    return Encoded(input_ids=ids, labels=[rng.randint(0, 1) for _ in range(n)], pad_id=pad)


def _method(name: str) -> MethodConfig:
    return MethodConfig(method=name)


def _perturb(applied) -> None:
    """Move PEFT parameters off their identity initialisation so they matter."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in applied.params.values():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)


def _logits_and_grads(stack, applied, batch, cache) -> tuple[torch.Tensor, list[torch.Tensor]]:
    for p in applied.params.values():
        p.grad = None
    logits = logits_for(stack, batch, cache)
    logits.square().sum().backward()
    return logits.detach(), [p.grad.clone() for p in applied.params.values()]


@pytest.mark.parametrize("method", ["adapter", "lora", "prefix"])
@pytest.mark.parametrize("family", FAMS)
@pytest.mark.parametrize("layer", [2, 3])
def test_cached_equals_plain(model_dirs, family, method, layer):
    """Cache (built at batch 5) + pooled last layer vs the whole plain forward: logits, gradients."""
    stack = _stack(model_dirs, family)
    applied = apply_method(stack, [layer], _method(method))
    _perturb(applied)
    enc = _enc(stack)
    cache = ActivationCache(stack, enc, layer, batch_size=5)
    assert stack.shortcut_unavailable() is None
    for idx in train_order(enc.lengths, 4, seed=3):
        batch = collate(enc, idx, regression=False)
        assert_cached_matches_plain(stack, lambda c, b=batch: _logits_and_grads(stack, applied, b, c), cache, **TOL)
    frozen = [p for p in stack.base.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)  # no gradient kept for frozen weights
    assert not cache.flat.requires_grad and stack.base.config.use_cache is False


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", FAMS)
def test_pooled_layer_without_padding(model_dirs, family, attn):
    """No padding (sdpa gets no mask at all), and a batch of one: the shortcut is still exact."""
    stack = _stack(model_dirs, family, attn)
    for shape in ((3, 6), (1, 4)):
        ids = torch.randint(4, 60, shape)
        mask = torch.ones(shape, dtype=torch.long)
        inputs = stack.prepare(ids, mask)
        h = stack.run_layers(inputs.hidden, inputs, 0, stack.num_layers - 1)
        assert stack.pooled_last_layer(h, inputs, mask) is not None
        stack.pooled_shortcut = "off"
        plain = stack(ids, mask)
        stack.pooled_shortcut = "auto"
        torch.testing.assert_close(stack(ids, mask), plain, **TOL)


def test_shortcut_respects_dropout(model_dirs):
    """GPT-2 and BERT carry dropout 0.1: in training the shortcut steps aside unless forced."""
    stack = _stack(model_dirs, "bert")
    stack.set_mode(True, frozen_below=3)
    assert "dropout" in stack.shortcut_unavailable()
    stack.pooled_shortcut = "always"
    assert stack.shortcut_unavailable() is None
    stack.pooled_shortcut = "off"
    assert "off" in stack.shortcut_unavailable()


def _train(stack, applied, enc, cache, layer) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    stack.head.reset_parameters()
    params = list(applied.params.values()) + list(stack.head.parameters())
    fit(stack, params, enc, epochs=1, max_steps=6, lr=1e-2, batch_size=4, seed=0, frozen_below=layer,
        cache=cache, quiet=True)  # fmt: skip
    return {**applied.state_dict(), **{f"head.{k}": v.clone() for k, v in stack.head.state_dict().items()}}


@pytest.mark.parametrize(("family", "method", "layer"), [(f, "adapter", 2) for f in FAMS] + [(f, "lora", 3) for f in FAMS])
def test_fit_with_cache_ends_with_same_weights(model_dirs, family, method, layer):
    """Same seed, with and without the cache (dropout on where the family has it): same weights."""
    stack = _stack(model_dirs, family)
    enc = _enc(stack, n=20)
    runs = []
    for mode in ("off", "auto"):
        torch.manual_seed(5)  # the same module initialisation both times
        applied = apply_method(stack, [layer], _method(method))
        stack.pooled_shortcut = mode
        cache = ActivationCache(stack, enc, layer, batch_size=7) if mode == "auto" else None
        runs.append(_train(stack, applied, enc, cache, layer))
        applied.remove()
    plain, cached = runs
    assert plain.keys() == cached.keys()
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], **TOL, msg=name)


def test_fit_with_pooled_shortcut_in_training(model_dirs):
    """With dropout set to 0, GPT-2 trains through the shortcut and matches the plain run."""
    stack = _stack(model_dirs, "gpt2")
    for m in stack.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    enc = _enc(stack, n=20)
    runs = []
    for mode in ("off", "auto"):
        torch.manual_seed(5)
        applied = apply_method(stack, [3], _method("adapter"))
        stack.pooled_shortcut = mode
        stack.set_mode(True, 3)
        assert (stack.shortcut_unavailable() is None) == (mode == "auto")
        runs.append(_train(stack, applied, enc, ActivationCache(stack, enc, 3) if mode == "auto" else None, 3))
        applied.remove()
    for name in runs[0]:
        torch.testing.assert_close(runs[1][name], runs[0][name], **TOL, msg=name)


@pytest.mark.parametrize("family", FAMS)
def test_advance_equals_direct(model_dirs, family):
    """A cache advanced 1 -> 2 -> 3 equals one built at 3, and the model's own hidden states."""
    stack = _stack(model_dirs, family)
    enc = _enc(stack)
    stepped = ActivationCache(stack, enc, 1, batch_size=6)
    stepped.advance(stack, 2)
    stepped.advance(stack, 3)
    direct = ActivationCache(stack, enc, 3, batch_size=4)
    torch.testing.assert_close(stepped.flat, direct.flat, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        stepped.advance(stack, 2)
    ids = torch.tensor([enc.input_ids[0]])
    with torch.no_grad():
        own = stack.base(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[3]
    torch.testing.assert_close(direct.gather([0], ids.shape[1]), own, rtol=1e-6, atol=1e-6)


def test_built_in_inference_mode(model_dirs, monkeypatch):
    """The frozen prefix runs under torch.inference_mode (no graph, no saved activations)."""
    stack = _stack(model_dirs, "llama")
    seen = []
    run = Stack.run_layers

    def spy(self, *args, **kwargs):
        seen.append(torch.is_inference_mode_enabled())
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Stack, "run_layers", spy)
    ActivationCache(stack, _enc(stack), 2)
    assert seen and all(seen)


def test_disk_equals_memory(model_dirs, tmp_path):
    """The memory-mapped cache holds the same values, advances the same, and leaves no file."""
    stack = _stack(model_dirs, "mistral")
    enc = _enc(stack)
    memory = ActivationCache(stack, enc, 1, storage="memory")
    disk = ActivationCache(stack, enc, 1, storage="disk", directory=tmp_path)
    assert disk.storage == "disk" and torch.equal(disk.flat, memory.flat)
    memory.advance(stack, 3)
    disk.advance(stack, 3)
    assert torch.equal(disk.flat, memory.flat)
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped: gone whatever way the run ends
    planned = ActivationCache(stack, enc, 2, memory_budget=0, directory=tmp_path)
    assert planned.storage == "disk"
    planned.close()
    assert planned.nbytes == 0


def test_plan_cache(monkeypatch, tmp_path):
    gb = 1024**3
    assert plan_cache(1000, 64, torch.float32, memory_budget=gb)[0] == "memory"
    monkeypatch.setattr(cache_mod, "_disk_free", lambda _d: 10 * gb)
    assert plan_cache(1000, 64, torch.float32, memory_budget=0, directory=tmp_path)[0] == "disk"
    monkeypatch.setattr(cache_mod, "_disk_free", lambda _d: 1000)
    storage, reason = plan_cache(1000, 64, torch.float32, memory_budget=0, directory=tmp_path)
    assert storage is None and "OLFT_CACHE_MEMORY_GB" in reason and "free disk" in reason
    monkeypatch.setenv("OLFT_CACHE_MEMORY_GB", "0.5")
    assert cache_mod.memory_budget_bytes() == gb // 2
    assert plan_cache(2 * gb // 256, 64, torch.float32)[0] is None  # 2 GB: over 0.5 GB and the disk


def test_fallback_runs_plain(model_dirs, monkeypatch, tmp_path, caplog):
    """No room anywhere: no cache, a logged reason, and training gives the plain result."""
    stack = _stack(model_dirs, "llama")
    enc = _enc(stack, n=20)
    monkeypatch.setattr(cache_mod, "_disk_free", lambda _d: 0)
    with caplog.at_level(logging.WARNING, logger="olft.cache"):
        caches = build_caches(stack, {"train": enc}, 2, memory_budget=0, directory=tmp_path)
    assert caches == {} and "plain forward" in caplog.text and "free disk" in caplog.text
    with pytest.raises(CacheUnavailable):
        ActivationCache(stack, enc, 2, memory_budget=0, directory=tmp_path)
    torch.manual_seed(0)
    applied = apply_method(stack, [2], _method("adapter"))
    fallback = _train(stack, applied, enc, caches.get("train"), 2)
    applied.remove()
    torch.manual_seed(0)
    applied = apply_method(stack, [2], _method("adapter"))
    plain = _train(stack, applied, enc, None, 2)
    for name in plain:
        assert torch.equal(fallback[name], plain[name])


def test_build_caches_shares_budget(model_dirs, tmp_path):
    """The memory budget is spent in split order: train in memory, the next split on disk."""
    stack = _stack(model_dirs, "gpt2")
    train, score = _enc(stack, seed=1), _enc(stack, seed=2)
    need = sum(train.lengths) * stack.hidden_size * 4
    caches = build_caches(stack, {"train": train, "score": score}, 2, memory_budget=need, directory=tmp_path)
    assert caches["train"].storage == "memory" and caches["score"].storage == "disk"
    assert build_caches(stack, {"train": train}, 0) == {}


@pytest.mark.slow
@pytest.mark.parametrize("alias", ["minilm-l6", "smollm2-135m"])
def test_real_models_cached_equals_plain(alias):
    """Real weights (MiniLM: BERT; SmolLM2: Llama with grouped-query attention): cached == plain."""
    stack, tok = load_stack(alias, 2)
    stack.eval()
    texts = ["a gripping , funny film", "dull", "the plot is thin but the acting is very good indeed"]
    enc = Encoded(input_ids=tok(texts)["input_ids"], labels=[1, 0, 1], pad_id=tok.pad_token_id)
    layer = stack.num_layers - 1
    applied = apply_method(stack, [layer], _method("lora"))
    _perturb(applied)
    batch = collate(enc, [0, 1, 2], regression=False)
    stack.pooled_shortcut = "off"
    plain = _logits_and_grads(stack, applied, batch, None)
    stack.pooled_shortcut = "auto"
    cached = _logits_and_grads(stack, applied, batch, ActivationCache(stack, enc, layer, batch_size=2))
    torch.testing.assert_close(cached[0], plain[0], **TOL)
    for got, want in zip(cached[1], plain[1], strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_selection_builds_the_cache_above_layer_zero(model_dirs, tiny_glue, tmp_path, monkeypatch):
    """Candidates 0-2: one cache built at layer 1 and used by 1 and 2; layer 0 runs the plain forward."""
    from olft import pipeline
    from olft.cli import main

    built, used = [], {}
    build, tune = pipeline.build_activation_caches, pipeline.Session.tune

    def spy_build(stack, encs, layer, *args, **kwargs):
        built.append(layer)
        return build(stack, encs, layer, *args, **kwargs)

    def spy_tune(self, layers, *args, caches=None, **kwargs):
        used[layers[0]] = sorted({c.layer for c in (caches or {}).values()})
        return tune(self, layers, *args, caches=caches, **kwargs)

    monkeypatch.setattr(pipeline, "build_activation_caches", spy_build)
    monkeypatch.setattr(pipeline.Session, "tune", spy_tune)
    args = ["select", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue),
            "--candidates", "0-2", "--selection-train-samples", "16", "--selection-eval-samples", "8", "-q",
            "--selector", "exhaustive", "--selection-adaptive", "0",  # one stage: one cache
            "--out", str(tmp_path / "sel")]  # fmt: skip
    assert main(args) == 0
    assert built == [1]
    assert used == {0: [], 1: [1], 2: [2]}
