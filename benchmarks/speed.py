"""Where the time goes: seconds per optimizer step for each way of tuning, in one process.

Same model, same real sentences (a seeded sample of a GLUE train split), same batches (batch 16,
length-grouped, padded per batch as olft does) for every olft measurement:

- all-layer PEFT (adapter, LoRA): the usual recipe, the reference every ratio is taken against
- final layer and middle layer, plain (whole forward each step) and cached (frozen prefix cached)
- final layer cached with the whole last layer run (pooled-token shortcut off), to show that lever
- the whole OLFT selection over the middle bucket on a small budget (`Session.select`'s loop:
  cache build, advance, `Session.tune` per candidate, scoring included), with the cache on, off,
  and off with the whole last layer run (olft's plain path before the pooled-token shortcut),
  interleaved candidate by candidate
- one epoch of middle-layer LoRA with olft's own `fit` (cache build included), against the peer
  recipe: `peft` LoRA with `layers_to_transform=[L]` on `AutoModelForSequenceClassification`,
  transformers' `Trainer`, inputs padded to 128 tokens (its epoch = mean step x steps per epoch)

Every step configuration runs the same batches, round-robin (`--rounds` rounds of `--steps` + 1
steps each, the first of each round discarded as warm-up), so that load from other work on a
shared machine falls on all configurations alike; the median is reported. The step is
`olft.train`'s: logits_for, loss, backward, clip, AdamW. Results go to a JSON file (versions, machine, command included), rewritten after each
measurement; `--resume` reuses the measurements a previous run with the same settings finished.

    python benchmarks/speed.py --model smollm2-135m --task sst2 --glue-dir ../shared/glue \
        --out benchmarks/results/speed-smollm2-135m.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from olft.atomic import atomic_write
from olft.backbone import Stack
from olft.cache import ActivationCache
from olft.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SelectionConfig, TrainConfig
from olft.data import Encoded, collate, train_order
from olft.loading import resolve_model_source
from olft.methods import apply_method
from olft.pipeline import Session
from olft.select import middle_bucket, parse_candidates
from olft.train import fit, logits_for, loss_fn

TARGETS = {  # measurement ratio -> (numerator, denominator, upper bound)
    "middle cached / all-layer": ("middle_cached", "all_adapter", 0.55),
    "final cached / all-layer": ("final_cached", "all_adapter", 0.10),
    "selection cached / plain": ("selection_cached", "selection_plain", 0.60),
    "selection cached / plain, whole last layer": ("selection_cached", "selection_plain_whole_last_layer", 0.60),
    "olft epoch / peer epoch": ("olft_epoch_lora", "peer_epoch_lora", 0.50),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="olft model alias or folder")
    p.add_argument("--task", default="sst2")
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"))
    p.add_argument("--out", type=Path, required=True, help="JSON results file")
    p.add_argument("--markdown", action="store_true", help="only print the Markdown tables of an existing --out")
    p.add_argument("--examples", type=int, default=400, help="training sentences sampled from the train split")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="measured steps per configuration and round")
    p.add_argument("--rounds", type=int, default=3, help="round-robin rounds (each starts with a warm-up step)")
    p.add_argument("--warmup", type=int, default=2, help="peer recipe: steps discarded before measuring")
    p.add_argument("--peer-steps", type=int, default=6, help="measured steps of the peer recipe")
    p.add_argument("--selection-train", type=int, default=96, help="examples each candidate trains on")
    p.add_argument("--selection-score", type=int, default=48, help="examples each candidate is scored on")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated groups to skip: steps, selection, epoch, peer")
    p.add_argument("--resume", action="store_true", help="reuse finished measurements from --out")
    return p.parse_args(argv)


# -- bookkeeping ---------------------------------------------------------------------------------
def environment(args: argparse.Namespace) -> dict:
    """Versions, machine and command, recorded next to every figure."""
    import peft
    import transformers

    try:
        import psutil

        ram = round(psutil.virtual_memory().total / 1024**3, 1)
    except ImportError:
        ram = None
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "peft": peft.__version__},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram_gb": ram},
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip


def settings(args: argparse.Namespace) -> dict:
    keys = ("model", "task", "examples", "batch_size", "steps", "rounds", "warmup", "threads", "peer_steps", "selection_train",
            "selection_score", "seed")  # fmt: skip
    return {k: getattr(args, k) for k in keys}


class Results:
    """The JSON file: rewritten after every measurement so an interrupted run keeps its figures."""

    def __init__(self, path: Path, env: dict, config: dict, resume: bool):
        self.path = path
        self.data = {**env, "settings": config, "measurements": {}}
        if resume and path.is_file():
            old = json.loads(path.read_text())
            if old.get("settings") == config:
                self.data["measurements"] = old.get("measurements", {})
                first = {k: old[k] for k in ("command", "started") if k in old}
                self.data["runs"] = old.get("runs", [first]) + [{k: env[k] for k in ("command", "started")}]

    def has(self, name: str) -> bool:
        return name in self.data["measurements"]

    def add(self, name: str, record: dict) -> None:
        self.data["measurements"][name] = record
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, json.dumps(self.data, indent=2) + "\n")


def summary(times: list[float], warmup: int) -> dict:
    kept = times[warmup:]
    return {"median_s": statistics.median(kept), "mean_s": statistics.fmean(kept), "steps_s": [round(t, 4) for t in times],
            "warmup": warmup}  # fmt: skip


# -- olft steps ----------------------------------------------------------------------------------
Spec = tuple[str, list[int], str, bool, str]  # name, layers, method, cached, pooled-shortcut mode


def _one_round(stack: Stack, enc: Encoded, batches: list[list[int]], spec: Spec, cache: ActivationCache | None) -> list[float]:
    """Seconds of each optimizer step over `batches` with the PEFT module of `spec` in place."""
    _name, layers, method, _cached, shortcut = spec
    torch.manual_seed(0)
    stack.head.reset_parameters()
    applied = apply_method(stack, layers, MethodConfig(method=method))
    stack.pooled_shortcut = shortcut
    try:
        params = list(applied.params.values()) + list(stack.head.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-4)
        stack.set_mode(True, min(layers))
        times = []
        for idx in batches:
            batch = collate(enc, idx, regression=False)
            t0 = time.perf_counter()
            loss = loss_fn(logits_for(stack, batch, cache), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            times.append(time.perf_counter() - t0)
        return times
    finally:
        stack.set_mode(False, 0)
        stack.pooled_shortcut = "auto"
        applied.remove()


def time_steps(stack: Stack, enc: Encoded, batches: list[list[int]], specs: list[Spec], rounds: int) -> dict[str, dict]:
    """Median s/step of every spec, measured round-robin so a busy, shared machine slows all alike.

    Round r runs the r-th slice of `batches` for each spec in turn; the first step of each slice
    (a warm-up after putting the module in) is discarded. Caches are built once, before round 0.
    """
    caches: dict[int, ActivationCache] = {}
    builds: dict[int, float] = {}
    records: dict[str, dict] = {}
    for name, layers, method, cached, shortcut in specs:
        records[name] = {"layers": layers if len(layers) < 3 else f"0-{layers[-1]}", "method": method, "cached": cached}
        if cached and min(layers) not in caches:  # one cache per layer, shared by the specs there
            t0 = time.perf_counter()
            caches[min(layers)] = ActivationCache(stack, enc, min(layers), 64)
            builds[min(layers)] = round(time.perf_counter() - t0, 3)
        if cached:
            records[name]["cache_build_s"] = builds[min(layers)]
        stack.pooled_shortcut = shortcut
        stack.set_mode(True, min(layers))
        records[name]["pooled_shortcut"] = stack.shortcut_unavailable() or "used"
        stack.set_mode(False, 0)
        stack.pooled_shortcut = "auto"
    per_round = len(batches) // rounds
    times: dict[str, list[float]] = {spec[0]: [] for spec in specs}
    for r in range(rounds):
        part = batches[r * per_round : (r + 1) * per_round]
        for spec in specs:
            cache = caches[min(spec[1])] if spec[3] else None
            times[spec[0]] += _one_round(stack, enc, part, spec, cache)[1:]
        print(f"  round {r + 1}/{rounds} done", flush=True)
    for name, ts in times.items():
        records[name].update(summary(ts, 0))
        records[name]["warmup"] = f"first step of each of {rounds} rounds"
    return records


def step_plan(num_layers: int) -> list[tuple[str, list[int], str, bool, str]]:
    """(name, layers, method, cached, shortcut mode) of every step measurement."""
    final, middle = num_layers - 1, num_layers // 2
    return [
        ("all_adapter", list(range(num_layers)), "adapter", False, "auto"),
        ("all_lora", list(range(num_layers)), "lora", False, "auto"),
        ("final_plain", [final], "adapter", False, "auto"),
        ("final_cached", [final], "adapter", True, "auto"),
        ("final_cached_whole_last_layer", [final], "adapter", True, "off"),
        ("final_cached_shortcut_always", [final], "adapter", True, "always"),
        ("middle_plain", [middle], "adapter", False, "auto"),
        ("middle_cached", [middle], "adapter", True, "auto"),
        ("middle_cached_lora", [middle], "lora", True, "auto"),
    ]


def has_dropout(stack: Stack) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in stack.layers[-1].modules())


# -- selection and epochs ------------------------------------------------------------------------
SELECTION_MODES = {  # name -> (cache on, pooled-token shortcut mode)
    "selection_plain": (False, "auto"),
    "selection_cached": (True, "auto"),
    "selection_plain_whole_last_layer": (False, "off"),
}


def time_selection(session: Session) -> dict[str, dict]:
    """The whole selection over the middle bucket, three ways, interleaved candidate by candidate.

    This is `Session.select`'s loop (one cache built at the lowest candidate, advanced to each
    candidate, then `Session.tune` trains and scores it), run for each mode in turn at every
    candidate, so that load from other work on the machine falls on the three alike. A mode's
    time is the sum of its candidates' times, plus the cache build for the cached mode.
    """
    s, stack = session.cfg.selection, session.stack
    candidates = parse_candidates(s.candidates, session.num_layers)
    _protocol, fit_enc, score_enc = session.selection_sets()
    t0 = time.perf_counter()
    caches = session.build_caches(candidates[0], {"train": fit_enc, "score": score_enc})
    build = time.perf_counter() - t0
    seconds = {name: build if cached else 0.0 for name, (cached, _m) in SELECTION_MODES.items()}
    scores: dict[str, list] = {name: [] for name in SELECTION_MODES}
    names = list(SELECTION_MODES)
    for k, layer in enumerate(candidates):
        for name in names[k % 3 :] + names[: k % 3]:  # rotate the order: no mode always runs first
            cached, shortcut = SELECTION_MODES[name]
            stack.pooled_shortcut = shortcut
            t0 = time.perf_counter()
            for cache in caches.values() if cached else ():
                cache.advance(stack, layer)
            r = session.tune([layer], fit_enc, {"score": score_enc}, epochs=s.selection_epochs,
                             max_steps=s.selection_max_steps, desc=f"candidate {layer}", caches=caches if cached else {})  # fmt: skip
            seconds[name] += time.perf_counter() - t0
            scores[name].append(r.score)
        stack.pooled_shortcut = "auto"
        print(f"  candidate {layer} done", flush=True)
    common = {"candidates": candidates, "train_examples": len(fit_enc), "score_examples": len(score_enc),
              "steps_per_candidate": s.selection_max_steps, "from": "Session.select's loop, modes interleaved"}  # fmt: skip
    return {
        name: {
            "seconds": round(seconds[name], 3),
            **({"cache_build_s": round(build, 3)} if cached else {}),
            "scores": scores[name],
            **common,
        }  # fmt: skip
        for name, (cached, _m) in SELECTION_MODES.items()
    }


def time_olft_epoch(stack: Stack, enc: Encoded, layer: int, batch_size: int, seed: int) -> dict:
    """One epoch of LoRA on `layer` with olft's own loop, the cache build included."""
    torch.manual_seed(seed)
    stack.head.reset_parameters()
    applied = apply_method(stack, [layer], MethodConfig(method="lora"))
    try:
        t0 = time.perf_counter()
        cache = ActivationCache(stack, enc, layer, 64)
        build = time.perf_counter() - t0
        params = list(applied.params.values()) + list(stack.head.parameters())
        result = fit(stack, params, enc, epochs=1, max_steps=None, lr=1e-3, batch_size=batch_size, seed=seed,
                     frozen_below=layer, cache=cache, quiet=True)  # fmt: skip
        return {"seconds": round(build + result.seconds, 3), "cache_build_s": round(build, 3),
                "train_s": round(result.seconds, 3), "steps": result.steps, "layer": layer}  # fmt: skip
    finally:
        applied.remove()


# -- the peer recipe -----------------------------------------------------------------------------
def time_peer(args: argparse.Namespace, stack: Stack, texts: list[str], labels: list[int], layer: int) -> dict:
    """peft LoRA on one layer + transformers' Trainer, padded to 128 tokens; s/step, s/epoch."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    source, _ = resolve_model_source(args.model)
    tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False
    lora = LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=list(stack.family.lora_targets),
                      layers_to_transform=[layer], layers_pattern=stack.family.layers_pattern)  # fmt: skip
    model = get_peft_model(model, lora)
    enc = tok(texts, padding="max_length", max_length=128, truncation=True)
    data = [
        {"input_ids": i, "attention_mask": m, "labels": y} for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels, strict=True)
    ]
    times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=args.batch_size, learning_rate=1e-3,
                                  max_steps=args.warmup + args.peer_steps, logging_strategy="no", save_strategy="no",
                                  report_to="none", use_cpu=True, seed=args.seed, disable_tqdm=True,
                                  dataloader_num_workers=0)  # fmt: skip
        trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[StepTimer()])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    out = summary(times, args.warmup)
    steps_per_epoch = math.ceil(len(texts) / args.batch_size)
    return {**out, "train_wall_s": round(wall, 3), "layer": layer, "padding": "max_length 128",
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "epoch_s": out["mean_s"] * steps_per_epoch, "steps_per_epoch": steps_per_epoch}  # fmt: skip


# -- report --------------------------------------------------------------------------------------
def seconds_of(m: dict) -> float | None:
    """The figure a measurement is compared by: median s/step, or wall seconds of a whole run."""
    if m is None:
        return None
    return m.get("median_s", m.get("seconds", m.get("epoch_s")))


def derive(results: Results) -> None:
    """Ratios to the all-layer step, and each target with its bound and whether it is met."""
    ms = results.data["measurements"]
    if "peer_lora" in ms:
        ms["peer_epoch_lora"] = {"epoch_s": ms["peer_lora"]["epoch_s"], "from": "peer_lora mean step x steps per epoch"}
    if "olft_epoch" in ms:
        ms["olft_epoch_lora"] = {"epoch_s": ms["olft_epoch"]["seconds"], "from": "olft_epoch (fit, cache build included)"}
    base = seconds_of(ms.get("all_adapter"))
    results.data["ratio_to_all_layer_adapter"] = {
        name: round(seconds_of(m) / base, 4) for name, m in ms.items() if base and "median_s" in m
    }
    targets = {}
    for label, (num, den, bound) in TARGETS.items():
        a, b = seconds_of(ms.get(num)), seconds_of(ms.get(den))
        if a is not None and b:
            targets[label] = {"ratio": round(a / b, 4), "target": f"<= {bound}", "met": a / b <= bound}
    results.data["targets"] = targets
    if "data" in results.data:
        d = results.data["data"]
        results.data["selection_layer_model"] = selection_layer_model(d["num_layers"], d["middle_bucket"])
    results.save()


def selection_layer_model(n: int, candidates: list[int]) -> dict:
    """Cached / plain selection cost counted in layer passes (forward = backward = 1 per layer).

    A plain step at candidate L runs n forward and n - L backward passes, a cached one n - L of
    each; with the pooled-token shortcut the last layer costs about nothing in both. Training
    steps only (scoring, cache build and fixed costs left out): the best exact caching can do.
    """
    whole = sum(2 * (n - c) for c in candidates) / sum(2 * n - c for c in candidates)
    pooled = sum(2 * (n - c - 1) for c in candidates) / sum(2 * n - c - 2 for c in candidates)
    return {"whole_last_layer": round(whole, 4), "pooled_last_layer": round(pooled, 4),
            "formula": "sum 2(N-L) / sum (2N-L); with the pooled shortcut sum 2(N-L-1) / sum (2N-L-2)"}  # fmt: skip


def markdown(data: dict) -> str:
    """The measurements, their ratios to the all-layer adapter step, and the targets, as Markdown."""
    ms, ratios = data["measurements"], data.get("ratio_to_all_layer_adapter", {})
    lines = ["| measurement | seconds | x all-layer adapter | note |", "|---|---:|---:|---|"]
    for name, m in ms.items():
        kind = "s/step (median)" if "median_s" in m else "s (whole run)"
        note = m.get("pooled_shortcut", m.get("from", ""))
        note = f"pooled-token shortcut: {note.split(' (')[0]}" if "pooled_shortcut" in m else note
        if "cache_build_s" in m:
            note = f"cache build {m['cache_build_s']} s; {note}"
        ratio = f"{ratios[name]:.3f}" if name in ratios else ""
        lines.append(f"| {name} | {seconds_of(m):.3f} {kind} | {ratio} | {note} |")
    lines += ["", "| target | measured | bound | |", "|---|---:|---:|---|"]
    for label, t in data.get("targets", {}).items():
        lines.append(f"| {label} | {t['ratio']:.3f} | {t['target']} | {'met' if t['met'] else 'missed'} |")
    if "selection_layer_model" in data:
        m = data["selection_layer_model"]
        lines += ["", f"Layer-pass model of selection cached / plain (training steps only): {m['pooled_last_layer']:.3f} "
                      f"with the pooled-token shortcut, {m['whole_last_layer']:.3f} with the whole last layer."]  # fmt: skip
    return "\n".join(lines)


def run_all(args: argparse.Namespace, results: Results) -> None:
    """Every measurement not already in `results`, in one process on one loaded model."""
    skip = set(filter(None, args.skip.split(",")))
    cfg = RunConfig(
        model=ModelConfig(model=args.model),
        data=DataConfig(task=args.task, glue_dir=args.glue_dir, max_train_samples=args.examples, max_eval_samples=32),
        method=MethodConfig(method="adapter"),
        train=TrainConfig(batch_size=args.batch_size, seed=args.seed, lr=1e-3),
        selection=SelectionConfig(selection_train_samples=args.selection_train, selection_eval_samples=args.selection_score,
                                  selection_max_steps=math.ceil(args.selection_train / args.batch_size)),
    )  # fmt: skip
    session = Session(cfg, quiet=True)
    stack, enc = session.stack, session.train_enc
    order = train_order(enc.lengths, args.batch_size, args.seed)
    n_batches = args.rounds * (1 + args.steps)
    batches = (order * (1 + n_batches // len(order)))[:n_batches]
    results.data["data"] = {"examples": len(enc), "mean_tokens": round(statistics.fmean(enc.lengths), 2),
                            "batch_widths": [max(enc.lengths[i] for i in b) for b in batches],
                            "num_layers": stack.num_layers, "middle_bucket": middle_bucket(stack.num_layers)}  # fmt: skip
    specs = [s for s in step_plan(stack.num_layers) if s[0] != "final_cached_shortcut_always" or has_dropout(stack)]
    if "steps" not in skip and not all(results.has(s[0]) for s in specs):
        print(f"measuring {len(specs)} step configurations in {args.rounds} rounds ...", flush=True)
        for name, record in time_steps(stack, enc, batches, specs, args.rounds).items():
            results.add(name, record)
        derive(results)
    if "selection" not in skip and not all(results.has(name) for name in SELECTION_MODES):
        print(f"measuring the selection over {middle_bucket(stack.num_layers)}, three ways ...", flush=True)
        for name, record in time_selection(session).items():
            results.add(name, record)
        derive(results)
    jobs: list[tuple[str, str, Callable[[], dict]]] = []
    middle = stack.num_layers // 2
    jobs.append(("epoch", "olft_epoch", lambda: time_olft_epoch(stack, enc, middle, args.batch_size, args.seed)))
    texts = ["\n".join(session.train_examples[i].texts) for i in range(len(enc))]
    labels = [int(ex.label) for ex in session.train_examples]
    jobs.append(("peer", "peer_lora", lambda: time_peer(args, stack, texts, labels, middle)))
    for group, name, job in jobs:
        if group in skip or results.has(name):
            continue
        print(f"measuring {name} ...", flush=True)
        results.add(name, job())
        derive(results)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.out.read_text())))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = Results(args.out, environment(args), settings(args), args.resume)
    run_all(args, results)
    derive(results)
    results.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results.save()
    print(markdown(results.data))


if __name__ == "__main__":
    main()
