"""The peer recipes of benchmarks/speed.py: what a careful `peft` + transformers user writes.

- best: `peft` LoRA (r 8, alpha 16, the family's q/v projections, `layers_to_transform` = the
  tuned layers) on `AutoModelForSequenceClassification`, transformers' `Trainer` with per-batch
  padding (`DataCollatorWithPadding`) and length grouping (`train_sampling_strategy=
  "group_by_length"`, transformers 5's name for `group_by_length=True`); one whole epoch timed.
- pad128: the same model, every input padded to 128 tokens, default sampler; a reference row
  (a few steps timed, times steps per epoch).
- the `adapters` library (AdapterHub) for the bottleneck adapter: only where it installs without
  changing transformers (`adapters_status` says why not otherwise).
"""

from __future__ import annotations

import importlib.metadata
import math
import tempfile
import time

import torch

from olft.loading import resolve_model_source


def adapters_status() -> dict:
    """Whether the `adapters` library can serve as the bottleneck-adapter peer here, and why not."""
    try:
        version = importlib.metadata.version("adapters")
    except importlib.metadata.PackageNotFoundError:
        return {"available": False, "reason": "adapters 1.3.0 (the newest) requires transformers~=4.57.6; installing it "
                "would replace transformers 5 (checked with `pip install adapters --dry-run`), so it is not installed "
                "and the bottleneck-adapter peer row is left out"}  # fmt: skip
    return {"available": False, "version": version, "reason": "installed, but no recipe for it here yet"}


def _peer_model(model: str, stack, layers: list[int] | None):
    """(peft model, tokenizer): LoRA on `layers` (None = every layer) of the seq-cls model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source, gguf = resolve_model_source(model)
    extra = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(source, **extra)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    base = AutoModelForSequenceClassification.from_pretrained(source, num_labels=stack.num_labels, dtype=torch.float32, **extra)
    base.config.pad_token_id = tok.pad_token_id
    base.config.use_cache = False
    where = {"layers_to_transform": layers, "layers_pattern": stack.family.layers_pattern} if layers is not None else {}
    lora = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=list(stack.family.lora_targets), **where)
    return get_peft_model(base, lora), tok


def _train(model, data: list[dict], args_kw: dict, collator, processing_class) -> tuple[list[tuple[float, float]], float, float]:
    """(wall, CPU) seconds of each step, and the wall and CPU seconds from train begin to train
    end, of one `Trainer.train`."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    times: list[float] = []
    span: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            span["begin"], span["cpu_begin"] = time.perf_counter(), time.process_time()

        def on_step_begin(self, *_a, **_k):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *_a, **_k):
            times.append((time.perf_counter() - self.t0, time.process_time() - self.c0))

        def on_train_end(self, *_a, **_k):
            span["end"], span["cpu_end"] = time.perf_counter(), time.process_time()

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, learning_rate=1e-3, logging_strategy="no", save_strategy="no", report_to="none",
                                  use_cpu=not torch.cuda.is_available(), disable_tqdm=True, dataloader_num_workers=0, **args_kw)  # fmt: skip
        trainer = Trainer(model=model, args=targs, train_dataset=data, data_collator=collator, processing_class=processing_class,
                          callbacks=[Timer()])  # fmt: skip
        trainer.train()
    return times, span["end"] - span["begin"], span["cpu_end"] - span["cpu_begin"]


def peer_epoch(model: str, stack, texts: list[str], labels: list[int], layers: list[int] | None, batch_size: int, seed: int) -> dict:
    """One whole epoch of the best peer recipe (per-batch padding, length grouping): seconds."""
    from transformers import DataCollatorWithPadding

    peft_model, tok = _peer_model(model, stack, layers)
    enc = tok(texts, truncation=True, max_length=128)
    data = [
        {"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    kw = {"per_device_train_batch_size": batch_size, "num_train_epochs": 1, "seed": seed, "train_sampling_strategy": "group_by_length"}
    times, wall, cpu = _train(peft_model, data, kw, DataCollatorWithPadding(tok), tok)
    return {"seconds": round(wall, 3), "cpu_s": round(cpu, 3), "steps": len(times), "median_step_s": round(sorted(times)[len(times) // 2][0], 4),
            "layers": "all" if layers is None else layers, "padding": "per batch (DataCollatorWithPadding), group_by_length",
            "trainable_params": sum(p.numel() for p in peft_model.parameters() if p.requires_grad)}  # fmt: skip


def peer_pad128(
    model: str, stack, texts: list[str], labels: list[int], layer: int, batch_size: int, seed: int, warmup: int, steps: int
) -> dict:
    """The weak reference recipe: inputs padded to 128 tokens; mean step x steps per epoch."""
    peft_model, tok = _peer_model(model, stack, [layer])
    enc = tok(texts, padding="max_length", max_length=128, truncation=True)
    data = [
        {"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    kw = {"per_device_train_batch_size": batch_size, "max_steps": warmup + steps, "seed": seed}
    times, _wall, _cpu = _train(peft_model, data, kw, None, None)
    kept = times[warmup:]
    per_epoch = math.ceil(len(texts) / batch_size)
    mean, mean_cpu = sum(t for t, _c in kept) / len(kept), sum(c for _t, c in kept) / len(kept)
    return {"seconds": round(mean * per_epoch, 3), "cpu_s": round(mean_cpu * per_epoch, 3), "mean_step_s": round(mean, 4),
            "steps_s": [round(t, 4) for t, _c in times],
            "warmup": warmup, "steps_per_epoch": per_epoch, "layers": [layer], "padding": "max_length 128",
            "from": "mean step x steps per epoch"}  # fmt: skip
