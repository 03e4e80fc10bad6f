"""Where the time and memory go: olft against the strongest peer recipe, in one process.

Same model, same real sentences (a seeded sample of a GLUE train split), same batch size and
thread count for everything; compared rows run round-robin so that load from other work on a
shared machine falls on all of them alike (the load average is recorded with each group).

- build: the cache build at the final and middle layer against a plain epoch's frozen forward
- steps: s/optimizer step, all-layer (adapter, LoRA), final and middle layer, plain and cached
  (olft's step: forward, loss, backward, clipping, AdamW; median over rounds)
- epoch: one whole epoch of LoRA with olft's `fit` (cache build included) and with the best
  peer recipe (`speed_peers`: `peft` LoRA with `layers_to_transform`, `Trainer`,
  `DataCollatorWithPadding`, length grouping) at the middle layer, the final layer, every layer
- peer: the pad-to-128 `Trainer` recipe at the middle layer, a reference row
- memory: peak RSS of all-layer, middle plain, middle cached (memory, disk), final cached,
  each in a fresh process (`speed_memory`)
- selection (left out by --quick): the whole OLFT selection with the cache on and off

Results go to a JSON file (versions, machine, command, load average included), rewritten after
each group, with the headline `ratios` and `targets`; `--resume` reuses finished groups.

    python benchmarks/speed.py --model smollm2-135m --glue-dir ../shared/glue --threads 1 --quick \
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
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import speed_memory
import speed_peers
import torch
from speed_report import epoch_layer_model, markdown, ratios, seconds_of, selection_layer_model, targets

from olft.atomic import atomic_write
from olft.backbone import Stack
from olft.cache import ActivationCache
from olft.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SelectionConfig, TrainConfig
from olft.data import Encoded, collate, train_order
from olft.layerspec import middle_bucket, parse_candidates
from olft.methods import apply_method
from olft.pipeline import Session
from olft.train import fit, logits_for, loss_fn

QUICK = {"examples": 256, "rounds": 2, "steps": 2, "epoch_rounds": 1, "build_rounds": 2, "peer_steps": 3, "memory_steps": 3}
FULL = {"examples": 400, "rounds": 3, "steps": 4, "epoch_rounds": 2, "build_rounds": 3, "peer_steps": 6, "memory_steps": 6}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m", help="olft model alias or folder")
    p.add_argument("--task", default="sst2")
    p.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"))
    p.add_argument("--out", type=Path, help="JSON results file (default: benchmarks/results/speed-<model>.json)")
    p.add_argument("--markdown", action="store_true", help="only print the Markdown tables of an existing --out")
    p.add_argument("--rederive", action="store_true", help="only recompute the ratios and targets of an existing --out")
    p.add_argument("--quick", action="store_true", help=f"smaller settings, selection left out (about 5 minutes): {QUICK}")
    p.add_argument("--examples", type=int, help=f"training sentences sampled from the train split (default {FULL['examples']})")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, help="measured steps per configuration and round")
    p.add_argument("--rounds", type=int, help="round-robin rounds of steps (each starts with a warm-up step)")
    p.add_argument("--epoch-rounds", type=int, help="round-robin rounds of whole epochs")
    p.add_argument("--build-rounds", type=int, help="round-robin rounds of cache build vs plain forward")
    p.add_argument("--warmup", type=int, default=2, help="pad-to-128 peer: steps discarded before measuring")
    p.add_argument("--peer-steps", type=int, help="measured steps of the pad-to-128 peer")
    p.add_argument("--memory-steps", type=int, help="optimizer steps of each memory probe")
    p.add_argument("--selection-train", type=int, default=96, help="examples each candidate trains on")
    p.add_argument("--selection-score", type=int, default=48, help="examples each candidate is scored on")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="", help="comma-separated groups to skip: build, steps, epoch, peer, memory, selection")
    p.add_argument("--resume", action="store_true", help="reuse finished measurements from --out")
    p.add_argument("--probe", choices=sorted(speed_memory.PROBES), help=argparse.SUPPRESS)  # memory child process
    args = p.parse_args(argv)
    if args.out is None:
        args.out = Path(__file__).parent / "results" / f"speed-{Path(args.model).name}.json"
    return args


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the settings left unset from QUICK or FULL; --quick also skips the selection group."""
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and "selection" not in args.skip.split(","):
        args.skip = ",".join(filter(None, [args.skip, "selection"]))
    return args


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
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "note": "load average: other work shares this machine; compared rows run round-robin",
    }  # fmt: skip


def settings(args: argparse.Namespace) -> dict:
    keys = ("model", "task", "quick", "examples", "batch_size", "steps", "rounds", "epoch_rounds", "build_rounds", "warmup", "threads",
            "peer_steps", "memory_steps", "selection_train", "selection_score", "seed")  # fmt: skip
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


def _one_round(stack: Stack, enc: Encoded, batches: list[list[int]], spec: Spec, cache: ActivationCache | None) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each optimizer step over `batches` with the PEFT module of `spec` in place."""
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
            t0, c0 = time.perf_counter(), time.process_time()
            loss = loss_fn(logits_for(stack, batch, cache), batch.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            times.append((time.perf_counter() - t0, time.process_time() - c0))
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
    times: dict[str, list[tuple[float, float]]] = {spec[0]: [] for spec in specs}
    for r in range(rounds):
        part = batches[r * per_round : (r + 1) * per_round]
        for spec in specs:
            cache = caches[min(spec[1])] if spec[3] else None
            times[spec[0]] += _one_round(stack, enc, part, spec, cache)[1:]
        print(f"  round {r + 1}/{rounds} done", flush=True)
    for name, ts in times.items():
        records[name].update(summary([t for t, _c in ts], 0))
        records[name]["cpu_median_s"] = statistics.median(c for _t, c in ts)
        records[name]["warmup"] = f"first step of each of {rounds} rounds"
    return records


def step_plan(num_layers: int, quick: bool = False) -> list[Spec]:
    """(name, layers, method, cached, shortcut mode) of every step measurement; --quick: the core."""
    final, middle = num_layers - 1, num_layers // 2
    plan = [
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
    core = {"all_adapter", "final_cached", "final_cached_shortcut_always", "middle_plain", "middle_cached"}
    return [s for s in plan if not quick or s[0] in core]


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


def time_olft_epoch(stack: Stack, enc: Encoded, layers: list[int], batch_size: int, seed: int) -> dict:
    """One epoch of LoRA on `layers` with olft's own `fit`, the cache build included (one layer)."""
    torch.manual_seed(seed)
    stack.head.reset_parameters()
    applied = apply_method(stack, layers, MethodConfig(method="lora"))
    cached = len(layers) == 1 and layers[0] > 0
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        cache = ActivationCache(stack, enc, layers[0], 64) if cached else None
        build = time.perf_counter() - t0
        params = list(applied.params.values()) + list(stack.head.parameters())
        result = fit(stack, params, enc, epochs=1, max_steps=None, lr=1e-3, batch_size=batch_size, seed=seed,
                     frozen_below=min(layers), cache=cache, quiet=True)  # fmt: skip
        return {"seconds": round(build + result.seconds, 3), "cpu_s": round(time.process_time() - c0, 3), "cache_build_s": round(build, 3),
                "train_s": round(result.seconds, 3), "steps": result.steps}  # fmt: skip
    finally:
        applied.remove()


def time_epochs(args: argparse.Namespace, stack: Stack, enc: Encoded, texts: list[str], labels: list[int]) -> dict[str, dict]:
    """Whole epochs of olft and of the best peer recipe at the middle, final and every layer,
    interleaved (`--epoch-rounds` rounds, the order rotated each round); the median is kept."""
    n = stack.num_layers
    spots = {"middle": [n // 2], "final": [n - 1], "all_layer": list(range(n))}
    jobs: dict[str, Callable[[], dict]] = {}
    for spot, layers in spots.items():
        jobs[f"olft_epoch_{spot}"] = lambda ls=layers: time_olft_epoch(stack, enc, ls, args.batch_size, args.seed)
        peer_layers = None if spot == "all_layer" else layers
        jobs[f"peer_epoch_{spot}"] = lambda ls=peer_layers: speed_peers.peer_epoch(
            args.model, stack, texts, labels, ls, args.batch_size, args.seed
        )
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    names = list(jobs)
    for r in range(args.epoch_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            runs[name].append({**jobs[name](), "load_avg_1m": round(os.getloadavg()[0], 2)})
            print(f"  {name}: {runs[name][-1]['seconds']} s", flush=True)
    out = {}
    for name, rs in runs.items():
        out[name] = {**rs[0], "seconds": statistics.median(r["seconds"] for r in rs), "rounds_s": [r["seconds"] for r in rs],
                     "cpu_s": statistics.median(r["cpu_s"] for r in rs), "rounds_cpu_s": [r["cpu_s"] for r in rs],
                     "load_avg_1m": [r["load_avg_1m"] for r in rs]}  # fmt: skip
    return out


def time_build(args: argparse.Namespace, stack: Stack, enc: Encoded) -> dict[str, dict]:
    """Cache build at the final and middle layer against a plain epoch's frozen forward.

    The plain forward is what an uncached training epoch runs through the frozen layers: the
    whole model (`Stack.forward`, pooled last layer where exact) over the epoch's length-grouped
    batches at the training batch size, frozen layers in eval mode, without a graph (frozen
    weights and inputs need none). Round-robin, `--build-rounds` rounds; wall and CPU seconds.
    """
    n = stack.num_layers
    order = train_order(enc.lengths, args.batch_size, args.seed)

    def plain() -> None:
        stack.set_mode(True, n - 1)
        with torch.no_grad():
            for idx in order:
                b = collate(enc, idx, regression=False)
                stack(b.input_ids, b.attention_mask)
        stack.set_mode(False, 0)

    jobs = {"plain_forward_epoch": plain, "cache_build_final": lambda: ActivationCache(stack, enc, n - 1, 64),
            "cache_build_middle": lambda: ActivationCache(stack, enc, n // 2, 64)}  # fmt: skip
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    cpu: dict[str, list[float]] = {k: [] for k in jobs}
    for _r in range(args.build_rounds):
        for name, job in jobs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            job()
            wall[name].append(round(time.perf_counter() - t0, 3))
            cpu[name].append(round(time.process_time() - c0, 3))
    real = sum(enc.lengths)
    padded = sum(len(b) * max(enc.lengths[i] for i in b) for b in order)
    return {name: {"median_s": statistics.median(wall[name]), "wall_s": wall[name], "cpu_median_s": statistics.median(cpu[name]),
                   "cpu_rounds_s": cpu[name], "examples": len(enc),
                   "batch_size": args.batch_size if name == "plain_forward_epoch" else 64,
                   **({"padded_over_real_tokens": round(padded / real, 3)} if name == "plain_forward_epoch" else {})}
            for name in jobs}  # fmt: skip


def time_memory(args: argparse.Namespace) -> dict[str, dict]:
    """Peak RSS of each probe, each in a fresh process (speed_memory)."""
    argv = ["--model", args.model, "--task", args.task, "--examples", str(args.examples), "--batch-size", str(args.batch_size),
            "--memory-steps", str(args.memory_steps), "--seed", str(args.seed), "--out", str(args.out)]  # fmt: skip
    argv += ["--glue-dir", args.glue_dir] if args.glue_dir else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    out = {}
    for name in speed_memory.PROBES:
        out[name] = speed_memory.run_probe(Path(__file__).resolve(), name, argv)
        print(f"  memory {name}: {out[name]}", flush=True)
    return out


# -- report --------------------------------------------------------------------------------------
def derive(results: Results) -> None:
    """Ratios to the all-layer step, the headline ratios, and each target with its bound."""
    ms = results.data["measurements"]
    base = seconds_of(ms.get("all_adapter"))
    results.data["ratio_to_all_layer_adapter"] = {
        name: round(seconds_of(m) / base, 4) for name, m in ms.items() if base and "median_s" in m and "wall_s" not in m
    }
    results.data["ratios"] = ratios(ms)
    results.data["ratios_wall"] = {k: v for k, v in ratios(ms, "wall").items() if "memory" not in k}
    results.data["ratios_basis"] = "time ratios by CPU seconds (one thread each) where recorded; ratios_wall: by wall seconds"
    results.data["targets"] = targets(results.data["ratios"])
    if "data" in results.data:
        d = results.data["data"]
        results.data["selection_layer_model"] = selection_layer_model(d["num_layers"], d["middle_bucket"])
        n, pooled = d["num_layers"], ms.get("middle_cached", {}).get("pooled_shortcut") == "used"
        results.data["epoch_layer_model"] = {f"middle_{e}_epochs": epoch_layer_model(n, n // 2, pooled, e) for e in (1, 2, 3, 10)} | {
            "final_1_epoch": epoch_layer_model(n, n - 1, pooled),
            "pooled_last_layer": pooled,
        }
    results.save()


def _session(args: argparse.Namespace) -> Session:
    cfg = RunConfig(
        model=ModelConfig(model=args.model),
        data=DataConfig(task=args.task, glue_dir=args.glue_dir, max_train_samples=args.examples, max_eval_samples=32),
        method=MethodConfig(method="adapter"),
        train=TrainConfig(batch_size=args.batch_size, seed=args.seed, lr=1e-3),
        selection=SelectionConfig(selection_train_samples=args.selection_train, selection_eval_samples=args.selection_score,
                                  selection_max_steps=math.ceil(args.selection_train / args.batch_size)),
    )  # fmt: skip
    return Session(cfg, quiet=True)


def step_batches(enc: Encoded, args: argparse.Namespace, n_batches: int) -> list[list[int]]:
    """The first `n_batches` of olft's length-grouped order, cycled: the same for every config."""
    order = train_order(enc.lengths, args.batch_size, args.seed)
    return (order * (1 + n_batches // len(order)))[:n_batches]


def run_all(args: argparse.Namespace, results: Results) -> None:
    """Every measurement not already in `results`, in one process on one loaded model."""
    skip = set(filter(None, args.skip.split(",")))
    session = _session(args)
    stack, enc = session.stack, session.train_enc
    batches = step_batches(enc, args, args.rounds * (1 + args.steps))
    results.data["data"] = {"examples": len(enc), "mean_tokens": round(statistics.fmean(enc.lengths), 2),
                            "batch_widths": [max(enc.lengths[i] for i in b) for b in batches],
                            "num_layers": stack.num_layers, "middle_bucket": middle_bucket(stack.num_layers)}  # fmt: skip
    results.data["adapters_library"] = speed_peers.adapters_status()
    specs = [s for s in step_plan(stack.num_layers, args.quick) if s[0] != "final_cached_shortcut_always" or has_dropout(stack)]
    texts = ["\n".join(session.train_examples[i].texts) for i in range(len(enc))]
    labels = [int(ex.label) for ex in session.train_examples]
    middle = stack.num_layers // 2
    groups: list[tuple[str, list[str], Callable[[], dict[str, dict]]]] = [
        ("build", ["plain_forward_epoch", "cache_build_final"], lambda: time_build(args, stack, enc)),
        ("steps", [s[0] for s in specs], lambda: time_steps(stack, enc, batches, specs, args.rounds)),
        ("epoch", ["olft_epoch_middle", "peer_epoch_middle"], lambda: time_epochs(args, stack, enc, texts, labels)),
        ("peer", ["peer_pad128_middle"], lambda: {"peer_pad128_middle": speed_peers.peer_pad128(
            args.model, stack, texts, labels, middle, args.batch_size, args.seed, args.warmup, args.peer_steps)}),
        ("memory", ["memory_all_layer"], lambda: {f"memory_{k}": v for k, v in time_memory(args).items()}),
        ("selection", list(SELECTION_MODES), lambda: time_selection(session)),
    ]  # fmt: skip
    for group, names, job in groups:
        if group in skip or all(results.has(n) for n in names):
            continue
        print(f"measuring {group} ...", flush=True)
        load = round(os.getloadavg()[0], 2)
        for name, record in job().items():
            results.add(name, {**record, "load_avg_1m_at_start": load})
        derive(results)


def run_probe(args: argparse.Namespace) -> None:
    """Child of `time_memory`: one memory probe in this fresh process, one JSON line out."""
    session = _session(args)
    batches = step_batches(session.train_enc, args, args.memory_steps)
    record = speed_memory.probe(args.probe, session.stack, session.train_enc, batches, _one_round)
    print(json.dumps(record), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = resolve(parse_args(argv))
    if args.markdown or args.rederive:
        data = json.loads(args.out.read_text())
        if args.rederive:
            results = Results(args.out, {}, data.get("settings", {}), resume=False)
            results.data = data
            derive(results)
        print(markdown(data))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.probe:
        run_probe(args)
        return
    results = Results(args.out, environment(args), settings(args), args.resume)
    t0 = time.perf_counter()
    run_all(args, results)
    derive(results)
    results.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    results.data["wall_s"] = round(time.perf_counter() - t0, 1)
    results.data["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.save()
    print(markdown(results.data))


if __name__ == "__main__":
    main()
