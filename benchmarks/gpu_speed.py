"""Step time, tokens per second and peak memory on one GPU for a Llama-2-7B-shaped model.

No network and no weights needed: the model is built from a `LlamaConfig` with Llama-2-7B's
shapes (32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary 32000) and random bf16 weights,
on the device. The data are random token ids of short-sentence lengths (log-normal, median about
24 tokens, at most 128), batch 16, olft's length-grouped per-batch padding.

Measured, in this order so that a timeout still leaves a comparison (the JSON is rewritten after
each): all-layer adapter step, plain frozen-forward epoch, then cache build, step and peak memory
for the middle layer cached, the final layer cached and the middle layer plain. Each step is
olft's (forward, loss, backward, clipping, AdamW), timed with the device synchronized; peak
memory is `torch.cuda.max_memory_allocated`, reset before each configuration (on the CPU: the
process's peak RSS, reset the same way, see speed_memory).

    python benchmarks/gpu_speed.py --out benchmarks/results/gpu-speed-llama2-7b-shape.json   # H200: ~3 min
    python benchmarks/gpu_speed.py --tiny --out /tmp/gpu-speed-tiny.json                     # CPU check, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from olft.backbone import Stack
from olft.cache import ActivationCache
from olft.config import MethodConfig
from olft.data import Encoded, collate, train_order
from olft.methods import apply_method
from olft.train import logits_for, loss_fn

LLAMA2_7B = {"num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096}  # fmt: skip
TINY = {"num_hidden_layers": 4, "hidden_size": 64, "intermediate_size": 172, "num_attention_heads": 4, "num_key_value_heads": 4,
        "vocab_size": 512, "max_position_embeddings": 256}  # fmt: skip
GB = 1024**3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="JSON results file")
    p.add_argument("--tiny", action="store_true", help="a 4 x 64 model of the same family (CPU check of this script)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default=None, choices=["bf16", "fp32"], help="default: bf16 on a GPU, fp32 on the CPU")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--examples", type=int, default=1024, help="examples cached and in the plain forward epoch")
    p.add_argument("--steps", type=int, default=20, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=3, help="steps discarded first")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def synthetic_data(n: int, vocab: int, seed: int) -> Encoded:
    """`n` examples of random ids (1..vocab-1; 0 pads), log-normal lengths (median ~24), random labels."""
    rng = random.Random(seed)
    lengths = [min(128, max(4, int(rng.lognormvariate(3.2, 0.45)))) for _ in range(n)]
    ids = [[rng.randrange(1, vocab) for _ in range(k)] for k in lengths]
    return Encoded(input_ids=ids, labels=[rng.randint(0, 1) for _ in range(n)], pad_id=0)


def build_stack(shape: dict, device: str, dtype: torch.dtype, seed: int) -> Stack:
    """A Llama-family `Stack` with random weights of `shape`, built directly on `device`."""
    from transformers import AutoModel, LlamaConfig

    torch.manual_seed(seed)
    config = LlamaConfig(**shape, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    with torch.device(device):
        base = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
    stack = Stack(base, num_labels=2).to(device=device, dtype=dtype)
    stack.freeze_base()
    return stack


class Meter:
    """Synchronized wall clock and peak memory (CUDA allocator, else process peak RSS)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def reset(self) -> None:
        self.sync()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            from speed_memory import reset_peak

            reset_peak()

    def peak_gb(self) -> float | None:
        if self.cuda:
            return round(torch.cuda.max_memory_allocated() / GB, 3)
        from speed_memory import proc_status_kb

        kb = proc_status_kb("VmHWM")
        return round(kb / 1024**2, 3) if kb else None


def time_config(stack: Stack, enc: Encoded, batches, layers: list[int], cached: bool, meter: Meter, warmup: int) -> dict:
    """Cache build (if any), then s/step, tokens/s and peak memory of adapter steps on `layers`."""
    meter.reset()
    torch.manual_seed(0)
    stack.head.reset_parameters()
    applied = apply_method(stack, layers, MethodConfig(method="adapter"))
    try:
        t0 = time.perf_counter()
        cache = ActivationCache(stack, enc, min(layers), 64, storage="memory") if cached else None
        meter.sync()
        build = time.perf_counter() - t0
        params = list(applied.params.values()) + list(stack.head.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        stack.set_mode(True, min(layers))
        times, tokens = [], []
        for idx in batches:
            batch = collate(enc, idx, regression=False)
            meter.sync()
            t0 = time.perf_counter()
            loss = loss_fn(logits_for(stack, batch, cache), batch.labels.to(stack.head.weight.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            meter.sync()
            times.append(time.perf_counter() - t0)
            tokens.append(int(batch.attention_mask.sum()))
        kept, kept_tokens = times[warmup:], tokens[warmup:]
        record = {"layers": layers if len(layers) < 3 else f"0-{layers[-1]}", "cached": cached, "median_s": statistics.median(kept),
                  "tokens_per_s": round(sum(kept_tokens) / sum(kept), 1), "steps_s": [round(t, 4) for t in times], "warmup": warmup,
                  "peak_memory_gb": meter.peak_gb()}  # fmt: skip
        if cache is not None:
            record.update(cache_build_s=round(build, 3), cache_mb=round(cache.nbytes / 1024**2, 2))
        return record
    finally:
        stack.set_mode(False, 0)
        applied.remove()


def time_plain_forward(stack: Stack, enc: Encoded, batch_size: int, seed: int, meter: Meter) -> dict:
    """A plain epoch's frozen forward: the whole model over the epoch's batches, no graph."""
    order = train_order(enc.lengths, batch_size, seed)
    device = stack.head.weight.device
    stack.set_mode(True, stack.num_layers - 1)
    meter.sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for idx in order:
            b = collate(enc, idx, regression=False)
            stack(b.input_ids.to(device), b.attention_mask.to(device))
    meter.sync()
    stack.set_mode(False, 0)
    return {"seconds": round(time.perf_counter() - t0, 3), "batches": len(order), "examples": len(enc)}


def ratios(ms: dict[str, dict]) -> dict[str, float]:
    """The headline ratios from the measurements present (absent inputs, absent ratio)."""

    def r(a, b):
        return round(a / b, 4) if a is not None and b else None

    def get(name: str, key: str):
        return ms.get(name, {}).get(key)

    out = {
        "middle_cached_vs_all_layer": r(get("middle_cached", "median_s"), get("all_layer", "median_s")),
        "final_cached_vs_all_layer": r(get("final_cached", "median_s"), get("all_layer", "median_s")),
        "middle_plain_vs_all_layer": r(get("middle_plain", "median_s"), get("all_layer", "median_s")),
        "cache_build_vs_plain_forward_epoch": r(get("final_cached", "cache_build_s"), get("plain_forward_epoch", "seconds")),
        "peak_memory_middle_vs_all_layer": r(get("middle_cached", "peak_memory_gb"), get("all_layer", "peak_memory_gb")),
        "peak_memory_final_vs_all_layer": r(get("final_cached", "peak_memory_gb"), get("all_layer", "peak_memory_gb")),
    }
    return {k: v for k, v in out.items() if v is not None}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    shape = TINY if args.tiny else LLAMA2_7B
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")]
    meter = Meter(args.device)
    data = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "shape": shape, "dtype": str(dtype), "device": args.device,
            "device_name": torch.cuda.get_device_name(0) if meter.cuda else platform.processor() or platform.machine(),
            "versions": {"torch": torch.__version__, "python": platform.python_version()}, "settings": vars(args) | {"out": str(args.out)},
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "measurements": {}}  # fmt: skip

    def save() -> None:
        data["ratios"] = ratios(data["measurements"])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(args.out)

    t0 = time.perf_counter()
    stack = build_stack(shape, args.device, dtype, args.seed)
    meter.sync()
    data["model_build_s"] = round(time.perf_counter() - t0, 1)
    data["params_b"] = round(sum(p.numel() for p in stack.parameters()) / 1e9, 3)
    enc = synthetic_data(args.examples, shape["vocab_size"], args.seed)
    data["mean_tokens"] = round(statistics.fmean(enc.lengths), 2)
    order = train_order(enc.lengths, args.batch_size, args.seed)
    batches = (order * (1 + (args.warmup + args.steps) // len(order)))[: args.warmup + args.steps]
    n = stack.num_layers
    plan = [("all_layer", list(range(n)), False), ("plain_forward_epoch", None, None), ("middle_cached", [n // 2], True),
            ("final_cached", [n - 1], True), ("middle_plain", [n // 2], False)]  # fmt: skip
    save()
    for name, layers, cached in plan:
        if layers is None:
            record = time_plain_forward(stack, enc, args.batch_size, args.seed, meter)
        else:
            record = time_config(stack, enc, batches, layers, cached, meter, args.warmup)
        data["measurements"][name] = record
        save()
        print(f"{name}: {record.get('median_s', record.get('seconds'))} s, peak {record.get('peak_memory_gb')} GB", flush=True)
    data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    data["wall_s"] = round(time.perf_counter() - t0, 1)
    save()
    print(json.dumps(data["ratios"], indent=2))
    return data


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
