"""Precision policy: trainable parameters stay fp32 under bf16/fp16 frozen weights, every one of
them moves in training, the loss matches fp32's, and a divergence names the cause it found."""

import pytest
import torch
from torch import nn

from olft import precision
from olft.cache import build_caches
from olft.config import MethodConfig
from olft.data import encode
from olft.errors import OlftError
from olft.loading import load_stack
from olft.methods import apply_method
from olft.train import NonFiniteLoss, fit

LAYER = 2


class Ex:
    def __init__(self, texts, label=0):
        self.texts, self.label = texts, label


DATA = [Ex((f"the movie was {w} really", "yes it is"), int(w == "good")) for w in ("good", "bad", "dull", "good fun")] * 4


def _train(model_dirs, family: str, method: str, dtype: str, lr: float = 1e-4, steps: int = 20, **kw):
    """(loss, trainable before, trainable after, trainable dtypes) of a short fit on layer 2."""
    stack, tok = load_stack(str(model_dirs[family]), 2, dtype=dtype)
    torch.manual_seed(0)
    stack.head.reset_parameters()
    precision.to_fp32(stack.head.parameters())  # as Session.tune does
    applied = apply_method(stack, [LAYER], MethodConfig(method=method))
    params = list(applied.params.values()) + list(stack.head.parameters())
    before = [p.detach().clone() for p in params]
    result = fit(stack, params, encode(tok, DATA, 32), epochs=1, max_steps=steps, lr=lr, batch_size=4, seed=0,
                 frozen_below=LAYER, warmup_ratio=0.0, quiet=True, **kw)  # fmt: skip
    return result.final_loss, before, [p.detach() for p in params], {p.dtype for p in params}


def _changed(before, after) -> torch.Tensor:
    return torch.cat([(a != b).flatten() for a, b in zip(before, after, strict=True)])


@pytest.fixture(scope="module")
def fp32_runs(model_dirs):
    return {m: _train(model_dirs, "llama", m, "fp32") for m in ("adapter", "lora", "prefix")}


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("method", ["adapter", "lora", "prefix"])
def test_low_precision_trains_every_value_to_the_fp32_loss(model_dirs, fp32_runs, method, dtype):
    ref_loss, ref_before, ref_after, _ = fp32_runs[method]
    loss, before, after, dtypes = _train(model_dirs, "llama", method, dtype)
    assert dtypes == {torch.float32}
    moved, ref_moved = _changed(before, after), _changed(ref_before, ref_after)
    # LoRA and prefix move every value in fp32; the adapter has ReLU units that never fire on
    # this data (no gradient in any precision): low precision must move whatever fp32 moves.
    assert bool(moved[ref_moved].all()), f"{int((~moved[ref_moved]).sum())} of {int(ref_moved.sum())} values never moved"
    if method != "adapter":
        assert bool(moved.all())
    assert loss == pytest.approx(ref_loss, abs=0.03)


def test_trainable_parameters_are_fp32_under_low_precision_weights(model_dirs):
    stack, _ = load_stack(str(model_dirs["gpt2"]), 2, dtype="fp16")
    for method in ("adapter", "lora", "prefix"):
        applied = apply_method(stack, [1], MethodConfig(method=method))
        assert {p.dtype for p in applied.params.values()} == {torch.float32}, method
        applied.remove()
    assert {p.dtype for p in stack.base.parameters()} == {torch.float16}


@pytest.mark.parametrize("cached", [False, True])
def test_fp16_overflow_in_the_frozen_forward_is_named(model_dirs, cached):
    stack, tok = load_stack(str(model_dirs["llama"]), 2, dtype="fp16")
    with torch.no_grad():  # layer 0's MLP now overflows fp16 (max 65504), finite weights: a dtype fault
        stack.layers[0].mlp.up_proj.weight.fill_(100.0)
        stack.layers[0].mlp.down_proj.weight.fill_(6e4)
    applied = apply_method(stack, [LAYER], MethodConfig(method="lora"))
    params = list(applied.params.values()) + list(stack.head.parameters())
    enc = encode(tok, DATA, 32)
    cache = None
    if cached:  # the overflow is then inside the cached hidden states entering the tuned layer
        with precision.autocast(stack):
            cache = build_caches(stack, {"train": enc}, LAYER)["train"]
    with pytest.raises(NonFiniteLoss) as err:
        fit(stack, params, enc, epochs=1, max_steps=3, lr=1e-3, batch_size=4, seed=0, frozen_below=LAYER, quiet=True,
            cache=cache)  # fmt: skip
    msg = str(err.value)
    where = f"in the hidden states entering layer {LAYER}" if cached else "at layer 0's output"
    assert f"overflows fp16 {where}" in msg and "learning rate is not the cause" in msg, msg
    assert "--dtype" in msg and "--lr" not in msg, msg


def test_too_high_learning_rate_is_named(model_dirs):
    with pytest.raises(NonFiniteLoss) as err:
        _train(model_dirs, "llama", "adapter", "fp32", lr=1e30, steps=6, max_grad_norm=0.0)
    msg = str(err.value)
    assert "try --lr 0.001, olft's default" in msg and "not the cause" not in msg, msg


def test_lower_learning_rate_hint_is_a_tenth_below_the_default():
    """Below olft's default the hint is a tenth of the rate; above it, the default (a tenth of an
    absurd rate is as absurd)."""
    from olft.precision import diagnose

    stack = nn.Module()
    stack.base = nn.Linear(2, 2)  # fp32 weights: the hint names only the learning rate
    bad = nn.Parameter(torch.tensor([float("nan")]))
    msg = diagnose(stack, [bad], lambda: torch.zeros(1), "loss", 3, 0, 5e-4)
    assert "try --lr 5e-05)" in msg, msg
    msg = diagnose(stack, [bad], lambda: torch.zeros(1), "loss", 3, 0, 0.5)
    assert "try --lr 0.001, olft's default)" in msg, msg
    # A rate --strategy-lr set is lowered there: --lr (perhaps at its default already) is not what diverged.
    msg = diagnose(stack, [bad], lambda: torch.zeros(1), "loss", 3, 0, 0.5, rate_from="olft")
    assert msg.endswith("Lower olft's rate in --strategy-lr (now 0.5, try olft=0.001 there, the default --lr)."), msg
    msg = diagnose(stack, [bad], lambda: torch.zeros(1), "loss", 3, 0, 5e-4, rate_from="full")
    assert msg.endswith("Lower full's rate in --strategy-lr (now 0.0005, try full=5e-05 there)."), msg


def test_fp16_loss_scaling_keeps_small_gradients(model_dirs):
    """A head of tiny weights (std 1e-5) makes the gradients reaching layer 2 smaller than fp16
    resolves (about 6e-8): without loss scaling most of LoRA's first-step updates are lost (154 of
    384 B values moved when measured), with it every one moves."""
    stack, tok = load_stack(str(model_dirs["llama"]), 2, dtype="fp16")
    torch.manual_seed(0)
    with torch.no_grad():
        stack.head.weight.normal_(0, 1e-5)
        stack.head.bias.zero_()
    applied = apply_method(stack, [LAYER], MethodConfig(method="lora"))
    lora_b = [p for n, p in applied.params.items() if "lora_B" in n]
    params = list(applied.params.values()) + list(stack.head.parameters())
    fit(stack, params, encode(tok, DATA, 32), epochs=1, max_steps=1, lr=1e-3, batch_size=16, seed=0,
        frozen_below=LAYER, warmup_ratio=0.0, quiet=True)  # fmt: skip
    assert all(bool((b != 0).all()) for b in lora_b)


# --dtype x --mixed-precision (resolved), the launcher's --mixed_precision under auto: refused or the autocast used.
@pytest.mark.parametrize(("dtype", "requested", "launcher", "expected"), [
    ("fp32", "bf16", None, "bf16"), ("bf16", "bf16", None, "bf16"), ("fp16", "no", None, "no"),
    ("fp16", "auto", None, "no"), ("fp32", "auto", "bf16", "bf16"), ("bf16", "auto", "bf16", "bf16"),
    ("fp16", "bf16", None, "--mixed-precision bf16"), ("fp16", "auto", "bf16", "the launcher's --mixed_precision bf16"),
    ("fp16", "no", "bf16", "no"),  # an explicit no wins over the launcher's
])
def test_mixed_precision_over_fp16_weights_is_refused(monkeypatch, dtype, requested, launcher, expected):
    from olft.distributed import resolve_mixed_precision

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    if launcher:
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", launcher)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # auto's bf16 GPU: under fp16 weights still no
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    if expected in ("no", "bf16"):
        assert resolve_mixed_precision(requested, dtype) == expected
    else:
        with pytest.raises(OlftError, match=f"--dtype fp16 cannot run under bf16 mixed precision \\({expected}\\).*--dtype bf16"):
            resolve_mixed_precision(requested, dtype)


def test_fp16_weights_under_bf16_autocast_exit_2_before_anything_loads(model_dirs, tiny_glue, tmp_path, capsys):
    # On a CPU this combination crashed in the first forward ("mixed dtype (CPU)"), leaving results.json
    # "stopped by an error"; it is refused as the options are read, and the RunConfig refuses it too.
    from olft.cli import main
    from olft.config import ModelConfig, RunConfig, TrainConfig

    out = tmp_path / "out"
    args = ["train", "--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue), "--layers", "1",
            "--dtype", "fp16", "--mixed-precision", "bf16", "--max-steps", "2", "--out", str(out), "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("olft: error: --dtype fp16 cannot run under bf16 mixed precision") and err.count("\n") == 1, err
    assert "--mixed-precision no" in err and not out.exists()
    with pytest.raises(OlftError, match="--dtype fp16 cannot run under bf16"):
        RunConfig(model=ModelConfig(dtype="fp16"), train=TrainConfig(mixed_precision="bf16"))
