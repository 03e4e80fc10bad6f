"""Reproduce the paper's GLUE comparison (its Table 1 and Table 2) and layer claims on one model.

For every (task, seed) one olft run folder tunes three strategies with the same PEFT method:
OLFT (one layer, chosen among the middle third on held-out train data), the final layer, and all
layers. Run folders live under `--work-dir`/<model>-<method>/ and are resumed by olft itself, so
the command can be stopped and started again; finished folders are skipped. The report
(`docs/results/<model>-<method>.md`, `.json`, `.png`, and `docs/results/README.md` with the
verdict on each claim) is rebuilt from the run folders alone:

    python benchmarks/paper.py --model minilm-l6        # about 2 h here (3 seeds, 700 examples, 2 epochs)
    python benchmarks/paper.py --model smollm2-135m     # about 3 h here (1 seed, 300 examples, 2 epochs)
    python benchmarks/paper.py --model minilm-l6 --report-only
    python benchmarks/paper.py --model smollm2-135m --plan-only   # the runs and the time estimate
    python benchmarks/paper.py --model smollm2-135m --shard 0/2 & # two processes share the runs
    python benchmarks/paper.py --model smollm2-135m --shard 1/2

Each model's defaults (caps, lr, sweep, protocol task) are its `PROFILES` entry; every one has a
flag. One torch thread by default: on this shared 2-core machine two threads ran 3.5x slower.

Tasks without a train split here (QQP, QNLI, MNLI) train on a fixed part of their dev split and
are scored on the disjoint rest; the derived JSONL files are written into the work dir. With a
full GLUE folder the same command uses the real train and dev splits.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from olft.atomic import atomic_write
from olft.errors import OlftError

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cmdline import recorded_args  # noqa: E402
from paper_report import GRID_SEED, grid_results, write_reports  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (olft task, table header); the paper's eight GLUE columns in its order.
COLUMNS = (("sst2", "SST-2"), ("mrpc", "MRPC"), ("qqp", "QQP"), ("mnli", "MNLI-m"), ("mnli-mm", "MNLI-mm"),
           ("qnli", "QNLI"), ("rte", "RTE"), ("wnli", "WNLI"))
# GLUE tasks the paper left out that this machine has full training sets for (tables add them after the eight).
EXTRA_COLUMNS = (("cola", "CoLA"), ("stsb", "STS-B"))
# Mean tokens per training example (measured on 400 examples, both tokenizers agree within 5 %); the
# cost model counts at least MIN_TOKENS per example, as short batches cost more per token.
MEAN_TOKENS = {"sst2": 13, "mrpc": 54, "qqp": 30, "mnli": 38, "mnli-mm": 38, "qnli": 50, "rte": 68, "wnli": 36,
               "cola": 11, "stsb": 30}

MIN_TOKENS = 30


@dataclass(frozen=True)
class Caps:
    """Budget knobs of one benchmark: every one is a flag of the same name."""

    seeds: str = "0,1,2"
    max_train_samples: int = 2000
    max_eval_samples: int = 1000
    max_length: int = 128
    epochs: float = 2.0
    batch_size: int = 16
    lr: float = 1e-3
    selection_train_samples: int = 500
    selection_eval_samples: int = 200
    selection_epochs: float = 1.0
    dev_train_fraction: float = 0.5  # part of a dev split used for training where train.tsv is missing
    split_seed: int = 0  # fixes which dev examples train; never the run seed
    task_train_caps: str = ""  # per-task caps over max_train_samples, e.g. "sst2=8000"
    selector: str = "exhaustive"  # the main runs' --selector (the paper protocol job is always exhaustive)
    lr_grid: str = ""  # learning rates tried per strategy before the main runs ("" = no grid: --lr for all)
    grid_tasks: str = "sst2,mrpc"  # tasks the grid is scored on (they need a train split)
    grid_train_samples: int = 2000  # grid runs train on this many train examples ...
    grid_holdout_samples: int = 500  # ... and are scored on these other train examples (never validation)

    def train_cap(self, task: str) -> int:
        """Training examples a main run of `task` may use: its task_train_caps entry, else max_train_samples."""
        caps = dict(item.split("=") for item in self.task_train_caps.split(",") if item.strip())
        return int(caps.get(task, self.max_train_samples))

    @property
    def grid(self) -> list[float]:
        """The learning-rate grid as floats (empty: no grid); OlftError on a value that is not a
        positive number or appears twice (two grid runs would share one folder)."""
        out = []
        for text in (x.strip() for x in self.lr_grid.split(",") if x.strip()):
            try:
                lr = float(text)
            except ValueError:
                lr = float("nan")
            if not 0 < lr < float("inf"):
                raise OlftError(f"--lr-grid: {text!r} is not a positive number; write e.g. --lr-grid 3e-4,1e-3,3e-3")
            if any(f"{lr:g}" == f"{x:g}" for x in out):
                raise OlftError(f"--lr-grid: {text!r} appears twice; list each rate once")
            out.append(lr)
        return out

    @property
    def grid_task_list(self) -> list[str]:
        """The grid's tasks (empty without a grid)."""
        return [t.strip() for t in self.grid_tasks.split(",") if t.strip()] if self.grid else []

    @property
    def seed_list(self) -> list[int]:
        """The seeds as integers."""
        return [int(s) for s in str(self.seeds).split(",") if s.strip()]


@dataclass(frozen=True)
class Profile:
    """Per-model defaults: caps chosen with the cost model (`job_units`) to fit the time budget."""

    caps: Caps
    sweep: str  # default of --sweep
    sweep_full: bool  # default of --sweep-full
    paper_protocol: str  # default of --paper-protocol
    speed_ms: float  # probe: ms per token of a whole-model forward, 1 torch thread, machine shared (load 1.5-4)
    overhead_s: float  # per run: loading the model, reading and tokenizing the data
    probe: str  # what the timing probes measured
    notes: str  # why the caps and hyperparameters are what they are


PROFILES = {
    "minilm-l6": Profile(
        Caps(seeds="0,1,2", max_train_samples=10000, task_train_caps="sst2=8000", max_eval_samples=5000, epochs=3.0,
             lr=1e-3, selection_train_samples=1000, selection_eval_samples=400, selection_epochs=3.0, selector="probe",
             lr_grid="3e-4,1e-3,3e-3,1e-2", grid_tasks="sst2,mrpc"),
        sweep="", sweep_full=False, paper_protocol="rte", speed_ms=0.8, overhead_s=6,
        probe="selection benchmark oracle, SST-2 2,000 x 3 epochs at layer 2: 47 s of training (0.6 ms per token for "
        "4 of 6 layers)",
        notes="v2 (after the input and selection fixes): full training sets (CoLA 8,551 the largest; SST-2 capped at "
        "8,000; tasks without a train split train on half their dev split, capped at 10,000), every scored split whole "
        "up to 5,000, 3 epochs; each strategy's learning rate chosen from the grid on held-out train data of two tasks; "
        "the default probe selector; claim 3 from the selection benchmark's oracle (every layer tuned, scored on "
        "validation) instead of a sweep here",
    ),  # fmt: skip
    "smollm2-135m": Profile(
        Caps(seeds="0,1", max_train_samples=2000, max_eval_samples=1000, epochs=3.0, lr=1e-3,
             selection_train_samples=1000, selection_eval_samples=400, selection_epochs=3.0, selector="auto",
             lr_grid="3e-4,1e-3,3e-3", grid_tasks="sst2,mrpc", grid_train_samples=1000, grid_holdout_samples=300),
        sweep="sst2,mrpc,rte", sweep_full=True, paper_protocol="sst2", speed_ms=6.1, overhead_s=15,
        probe="RTE 64 train / 64 scored / 1 epoch, selection 32/32 over layers 10-19: 342 s (cost model 330 s)",
        notes="v2: 2 seeds of 2,000 examples, 3 epochs, per-strategy learning rate from the grid, the default auto selector (the probe's top two of ten trained); "
        "claim 3 from full-train layer sweeps (the selection benchmark's oracle where it exists)",
    ),  # fmt: skip
}
FALLBACK = Profile(Caps(), "rte,mrpc,sst2", False, "rte", 0.0, 0.0, "no timing probe for this model", "")


@dataclass(frozen=True)
class Plan:
    """Where one table column's data comes from and which run folder and split score it."""

    column: str  # olft task of the column, e.g. "mnli-mm"
    run_task: str  # olft task of the run folder that scores it
    split: str | None  # eval split of that run to read (None = its headline split)
    source: str  # "glue" or "file"
    train_file: str | None = None
    validation_file: str | None = None
    note: str = ""  # where train and eval examples came from (for the table)
    train_count: int = 0  # examples available before the caps
    eval_count: int = 0


@dataclass(frozen=True)
class Job:
    """One olft run folder: main (olft,final,full), sweep (all-layer selection), sweepfull, paper,
    or lr (one learning rate of the grid: olft,final,full on held-out train data)."""

    kind: str
    task: str
    seed: int
    lr: float | None = None  # lr jobs only

    @property
    def name(self) -> str:
        """Run folder name: <task>-s<seed>, prefixed by the kind (and an lr job's rate) except for main runs."""
        prefix = f"lr{self.lr:g}-" if self.kind == "lr" else "" if self.kind == "main" else self.kind + "-"
        return f"{prefix}{self.task}-s{self.seed}"


def model_tag(model: str, method: str) -> str:
    """File-name stem of a model/method pair: the alias or the folder name."""
    return f"{Path(model).name.replace('.gguf', '')}-{method}"


# ------------------------------------------------------------------------------ data plans

def _write_jsonl(path: Path, task, examples: list) -> None:
    """Examples as JSON Lines with the task's canonical text fields and an integer label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({**dict(zip(task.text_fields, ex.texts, strict=True)), "label": ex.label}) for ex in examples]
    atomic_write(path, "\n".join(lines) + "\n")


def derive_split(task_name: str, glue_dir: Path, data_dir: Path, caps: Caps) -> dict:
    """Split a dev file into a fixed train part and the disjoint rest (written once as JSONL).

    The split depends only on `caps.split_seed` and `caps.dev_train_fraction`, never on the run
    seed, so every seed and strategy trains and scores on the same two disjoint parts. MNLI's
    two columns share one train part drawn from dev_matched; MNLI-mm scores all of dev_mismatched.
    """
    from olft import tasks

    task = tasks.get_task("mnli" if task_name == "mnli-mm" else task_name)
    source_split = task.eval_splits[0]  # validation, or validation_matched for MNLI
    folder = data_dir / task.name
    spec = {"source": f"{task.glue_folder}/{task.glue_file(source_split)}", "fraction": caps.dev_train_fraction,
            "split_seed": caps.split_seed}
    meta = _saved_split(folder, spec)
    if meta is None:
        dev = tasks.load_glue(task, source_split, glue_dir)
        order = random.Random(caps.split_seed).sample(range(len(dev)), len(dev))
        cut = round(caps.dev_train_fraction * len(dev))
        extra = {}
        if task.name == "mnli":
            mm = tasks.load_glue(task, "validation_mismatched", glue_dir)
            _write_jsonl(data_dir / "mnli-mm" / "validation.jsonl", task, mm)
            extra["validation_mismatched"] = len(mm)
        meta = _write_split(folder, task, spec, dev, order[:cut], order[cut:], extra)
    return meta


def _saved_split(folder: Path, spec: dict) -> dict | None:
    """The split.json of a derived split written with this `spec`, else None (derive it again)."""
    meta_path = folder / "split.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return meta if meta.get("spec") == spec and (folder / "train.jsonl").is_file() else None


def _write_split(folder: Path, task, spec: dict, examples: list, train_idx: list[int], scored_idx: list[int],
                 extra: dict | None = None) -> dict:
    """Write examples[train_idx] as train.jsonl and examples[scored_idx] as validation.jsonl (each in
    file order), then split.json with `spec` and the counts (last: its presence marks the split done)."""
    _write_jsonl(folder / "train.jsonl", task, [examples[i] for i in sorted(train_idx)])
    _write_jsonl(folder / "validation.jsonl", task, [examples[i] for i in sorted(scored_idx)])
    meta = {"spec": spec, "train": len(train_idx), "validation": len(scored_idx), **(extra or {})}
    (folder / "split.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def derive_holdout(task_name: str, glue_dir: Path, data_dir: Path, caps: Caps) -> dict:
    """The learning-rate grid's data: from a task's train split, `grid_holdout_samples` examples to
    score on and `grid_train_samples` other ones to train on (JSONL under data_dir/grid/<task>/,
    written once). Validation is never touched, so the grid cannot leak into the reported scores.
    Fixed by `caps.split_seed`, the same for every learning rate and strategy."""
    from olft import tasks

    task = tasks.get_task(task_name)
    folder = data_dir / "grid" / task.name
    spec = {"source": f"{task.glue_folder}/train.tsv", "train": caps.grid_train_samples,
            "holdout": caps.grid_holdout_samples, "split_seed": caps.split_seed}
    meta = _saved_split(folder, spec)
    if meta is None:
        train = tasks.load_glue(task, "train", glue_dir)
        need = caps.grid_holdout_samples + caps.grid_train_samples
        if len(train) - caps.grid_holdout_samples < min(caps.grid_train_samples, 2 * caps.batch_size):
            raise OlftError(f"the learning-rate grid needs {need} train examples of {task.name}, the GLUE folder has "
                            f"{len(train)}: pick other --grid-tasks or lower --grid-holdout-samples")
        order = random.Random(caps.split_seed).sample(range(len(train)), len(train))
        held, rest = order[: caps.grid_holdout_samples], order[caps.grid_holdout_samples : need]
        meta = _write_split(folder, task, spec, train, rest, held)
    return meta


def _data_rows(path: Path) -> int:
    """Data rows of a GLUE TSV (header excluded)."""
    with path.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip()) - 1


def plan_column(column: str, glue_dir: Path, data_dir: Path, caps: Caps) -> Plan:
    """Real train/dev splits when the GLUE folder has train.tsv, else a derived dev split."""
    from olft import tasks

    task = tasks.get_task(column)
    folder = glue_dir / task.glue_folder
    if (folder / "train.tsv").is_file():
        rows = _data_rows(folder / "train.tsv")
        dev = task.glue_file(task.eval_splits[0])
        if column == "mnli-mm":  # the MNLI run scores both dev files
            return Plan(column, "mnli", "validation_mismatched", "glue", note=f"train.tsv / {dev}", train_count=rows,
                        eval_count=_data_rows(folder / dev))
        return Plan(column, column, None, "glue", note=f"train.tsv / {dev}", train_count=rows, eval_count=_data_rows(folder / dev))
    meta = derive_split(column, glue_dir, data_dir, caps)
    base = "mnli" if column == "mnli-mm" else column
    head = f"no train split: trains on {meta['train']} of {meta['spec']['source']} (fixed, split seed {caps.split_seed}), scored on"
    if column == "mnli-mm":
        note, scored = f"{head} {task.glue_folder}/dev_mismatched.tsv ({meta['validation_mismatched']})", meta["validation_mismatched"]
    else:
        note, scored = f"{head} the disjoint other {meta['validation']}", meta["validation"]
    return Plan(column, column, None, "file", str(data_dir / base / "train.jsonl"), str(data_dir / column / "validation.jsonl"),
                note, meta["train"], scored)


# ------------------------------------------------------------------------------ run configs

def job_config(job: Job, plan: Plan, args: argparse.Namespace, caps: Caps, out: Path, num_layers: int | None):
    """The olft RunConfig of one job: the caps, the data plan, and the job's selection setup."""
    from olft.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SelectionConfig, TrainConfig

    if job.kind == "lr":  # the grid: train and score on two disjoint parts of the train split
        folder = out.parent / "data" / "grid" / job.task
        data = DataConfig(task=job.task, data_source="file", train_file=str(folder / "train.jsonl"),
                          validation_file=str(folder / "validation.jsonl"), max_length=caps.max_length)
    else:
        data = DataConfig(
            task=plan.run_task, glue_dir=str(args.glue_dir), data_source=plan.source, train_file=plan.train_file,
            validation_file=plan.validation_file, max_train_samples=caps.train_cap(plan.run_task),
            max_eval_samples=caps.max_eval_samples, max_length=caps.max_length,
        )  # fmt: skip
    strategy_lr = None if job.kind == "lr" else chosen_lrs(out.parent, caps)
    # Checkpoints let a stopped run resume mid-strategy (all-layer tuning of smollm2-135m is hours on
    # one core); olft resumes to the weights of a run never stopped, so the scores do not change.
    train = TrainConfig(epochs=caps.epochs, lr=job.lr or caps.lr, batch_size=caps.batch_size, seed=job.seed,
                        strategy_lr=",".join(f"{k}={v:g}" for k, v in strategy_lr.items()) if strategy_lr else None,
                        checkpoint_every=getattr(args, "checkpoint_every", None) or None)
    selection = SelectionConfig(
        candidates="all" if job.kind == "sweep" else "middle",
        selection_data="validation" if job.kind == "paper" else "train",
        selection_train_samples=caps.selection_train_samples, selection_eval_samples=caps.selection_eval_samples,
        # No retraining of tied finalists, under every selector (config.json records it): `olft_given` tells
        # olft it is set only where the selector reads it.
        selection_epochs=caps.selection_epochs, selection_adaptive=0,
        selector="exhaustive" if job.kind in ("paper", "sweep") else caps.selector,  # paper: the paper's procedure
    )  # fmt: skip
    strategies = {"main": "olft,final,full", "lr": "olft,final,full", "paper": "olft", "sweep": "olft"}.get(job.kind)
    if job.kind == "sweepfull":
        strategies = ",".join(f"layers={i}" for i in range(num_layers or 0))
    return RunConfig(model=ModelConfig(args.model), data=data, method=MethodConfig(args.method), train=train,
                     selection=selection, strategies=strategies, out=str(out))


ADAPTIVE = "selection.selection_adaptive"


def olft_given(cfg) -> set[str]:
    """The options of a job's config that olft is told the benchmark set (`given`, which its warnings
    of unused options read): those that differ from olft's defaults, as olft assumes without `given`
    (`config.given_options`), less those the job's selector does not read (`config.APPLIES`). Every
    job sets --selection-adaptive 0 (tied finalists are not retrained) and the profile's
    --selection-epochs, no-ops under auto or a proxy, so naming them as ignored would put a false
    warning in every such run's log. The config keeps its values whatever the selector: every run
    folder's config.json has recorded them, and a different value would stop an earlier run's folder
    from being continued (`ownership`). A full sweep's job (`--strategies layers=0,...`) selects no
    layer, so none of the selection options its config shares with the other jobs is named either."""
    from olft.config import APPLIES, given_options

    given = {k for k in given_options(cfg)
             if not (k in APPLIES and APPLIES[k][0] == "selector" and cfg.selection.selector not in APPLIES[k][1])}
    if "olft" not in cfg.strategies.split(","):
        given = {k for k in given if not k.startswith("selection.")}
    return given


def grid_jobs(caps: Caps) -> list[Job]:
    """The learning-rate grid's runs: every rate on every grid task (each run tunes olft, final, full)."""
    return [Job("lr", t, GRID_SEED, lr) for t in caps.grid_task_list for lr in caps.grid]


def chosen_lrs(work: Path, caps: Caps) -> dict[str, float] | None:
    """{strategy: lr} from the finished grid; None without a grid; OlftError while it is unfinished."""
    if not caps.grid:
        return None
    g = grid_results(work, asdict(caps))
    if g["chosen"] is None:
        raise GridUnfinished(f"the learning-rate grid is unfinished ({', '.join(g['missing'])})")
    return g["chosen"]


class GridUnfinished(OlftError):
    """A main run needs the grid's choice and another process is still running the grid."""


def plan_jobs(columns: list[str], plans: dict[str, Plan], caps: Caps, sweep: list[str], sweep_full: bool,
              paper_task: str | None, extra_seeds: int) -> list[Job]:
    """The grid first, then seed by seed: every table column, then that seed's extra runs, so a
    partial run is a whole table."""
    jobs: list[Job] = grid_jobs(caps)
    seeds = caps.seed_list
    for i, seed in enumerate(seeds):
        for column in columns:
            job = Job("main", plans[column].run_task, seed)
            if job not in jobs:
                jobs.append(job)
        if i < extra_seeds:
            if paper_task:
                jobs.append(Job("paper", plans[paper_task].run_task, seed))
            jobs += [Job("sweep", plans[t].run_task, seed) for t in sweep]
            jobs += [Job("sweepfull", plans[t].run_task, seed) for t in sweep if sweep_full]
    return jobs


def job_units(job: Job, plan: Plan | None, caps: Caps, n: int) -> float:
    """A job's cost in tokens of whole-model forward passes (times Profile.speed_ms gives milliseconds).

    Fitted to the probes: training a token through all layers costs ~1.15 forwards, through a
    middle layer (cached below) ~0.6; every strategy builds the activation cache of its train
    and eval examples and evaluates; each candidate trains on the selection subset and scores.
    """
    if job.kind == "lr":
        t, v = caps.grid_train_samples, caps.grid_holdout_samples
    else:
        t = min(plan.train_count or caps.max_train_samples, caps.train_cap(plan.run_task))
        v = min(plan.eval_count or caps.max_eval_samples, caps.max_eval_samples)
    e, s, h = caps.epochs, caps.selection_train_samples, caps.selection_eval_samples
    per_candidate = 0.6 * s * caps.selection_epochs + 0.5 * h + (s + h) / n
    middle = n - 2 * (n // 3)
    units = {
        "main": t * (1.8 * e + 1.42) + 2.97 * v + 0.33 * (s + h) + middle * per_candidate,
        "paper": t * (0.6 * e + 0.45) + v + 0.33 * s + middle * (per_candidate + 0.5 * (v - h)),
        "sweep": n * per_candidate,
        "sweepfull": 1.15 * t * e * (n + 1) / 2 + (t + v) * (n - 1) / 2 + v * (n + 1) / 2,
    }["main" if job.kind == "lr" else job.kind]  # a grid run is a main run on the grid's data
    return units * max(MIN_TOKENS, MEAN_TOKENS.get(job.task, 50))


def measured_speed(finished: list[Job], by_task: dict[str, Plan], caps: Caps, n: int, profile: Profile,
                   walls: dict[str, float]) -> tuple[float, int] | None:
    """(ms per cost unit, runs) measured on the work dir's `finished` runs (their recorded wall
    seconds less the profile's per-run overhead, over their `job_units`); None before any finished.
    The profile's probe was timed on a few short runs and can be off by 2x for long ones."""
    done = [j for j in finished if j.name in walls]
    units = sum(job_units(j, by_task.get(j.task), caps, n) for j in done)
    if not done or not units:
        return None
    return max(sum(walls[j.name] - profile.overhead_s for j in done), 1.0) * 1000 / units, len(done)


def estimate(jobs: list[Job], by_task: dict[str, Plan], caps: Caps, n: int, profile: Profile,
             measured: tuple[float, int] | None = None, todo: list[Job] | None = None) -> str:
    """Predicted wall time of `jobs` (and of the unfinished `todo`) on this machine, with where the
    speed comes from: `measured` (ms per unit, runs) from `measured_speed`, else the profile's probe."""
    if not profile.speed_ms and not measured:
        return profile.probe
    speed = measured[0] if measured else profile.speed_ms

    def hours(js: list[Job]) -> float:
        return (sum(job_units(j, by_task.get(j.task), caps, n) for j in js) * speed / 1000 + len(js) * profile.overhead_s) / 3600

    left = f"{_dur(hours(todo))} for the {len(todo)} unfinished run{'s' * (len(todo) != 1)}, " if todo is not None and len(todo) < len(jobs) else ""
    source = (f"{speed:.2f} ms per token of a whole-model forward measured on the {measured[1]} finished runs of this work dir "
              f"(the profile's probe: {profile.speed_ms} ms)" if measured else
              f"{profile.speed_ms} ms per token of a whole-model forward with 1 torch thread (probes: {profile.probe})")
    return f"{left}{_dur(hours(jobs))} for all {len(jobs)} runs, from a cost model at {source}"


def _dur(hours: float) -> str:
    """Hours as '2.4 h', or minutes below an hour ('3 min'): a small plan must not read '0.0 h'."""
    return f"{hours:.1f} h" if hours >= 1 else f"{max(hours * 60, 0.1):.{0 if hours * 60 >= 10 else 1}f} min"


def is_finished(folder: Path) -> bool:
    """A folder whose run ended (completely, or with failed pieces that a rerun would repeat)."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return results.get("status") in ("complete", "finished with failures", "failed")


def num_layers_of(args: argparse.Namespace, work: Path) -> int:
    """The model's layer count: from any run folder, else by loading the model once."""
    for results in sorted(work.glob("*/results.json")):
        try:
            return int(json.loads(results.read_text())["num_layers"])
        except (OSError, KeyError, ValueError):
            continue
    from olft import api
    from olft.config import MethodConfig, ModelConfig, RunConfig

    return int(api.info(RunConfig(model=ModelConfig(args.model), method=MethodConfig(args.method)))["num_layers"])


def _clock(seconds: float) -> str:
    """Seconds as 1h05m, for progress lines."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


def run_jobs(jobs: list[Job], plans: dict[str, Plan], args: argparse.Namespace, caps: Caps, work: Path, manifest: dict,
             n_layers: int) -> None:
    """Run every unfinished job, one line per finished job with elapsed time and an ETA."""
    from olft import api

    by_task = {p.run_task: p for p in plans.values()}
    weights = {job: job_units(job, by_task.get(job.task), caps, n_layers) for job in jobs}
    mine = shard_jobs(jobs, weights, *args.shard)
    todo = [job for job in mine if not is_finished(work / job.name)]
    if args.shard[1] > 1:
        print(f"shard {args.shard[0]}/{args.shard[1]} holds {len(mine)} of the {len(jobs)} planned runs", flush=True)
    print(f"{len(mine) - len(todo)} of {len(mine)} runs already finished; {len(todo)} to go in {work}", flush=True)
    start, done_weight = time.perf_counter(), 0.0
    for i, job in enumerate(todo, 1):
        cfg = _config_when_ready(job, by_task.get(job.task), args, caps, work, n_layers)
        t0 = time.perf_counter()
        try:
            (api.select_layer if job.kind == "sweep" else api.run)(cfg, quiet=True, given=olft_given(cfg))
        finally:  # an interrupted job's time counts too: the report sums the time spent
            took = time.perf_counter() - t0
            walls = manifest.setdefault("wall_seconds", {})
            walls[job.name] = round(walls.get(job.name, 0.0) + took, 1)
            write_manifest(work, manifest, updated={job.name})
        done_weight += weights[job]
        elapsed = time.perf_counter() - start
        left = sum(weights[j] for j in todo[i:])
        eta = elapsed / done_weight * left if done_weight else 0.0
        print(f"[{i}/{len(todo)}] {job.name} finished in {took / 60:.1f} min; elapsed {_clock(elapsed)}, ETA {_clock(eta)}",
              flush=True)
        _report(work, args, caps)


def _report(work: Path, args: argparse.Namespace, caps: Caps) -> None:
    """Rebuild the report; a report error never stops the runs (rebuild it later with --report-only)."""
    try:
        write_reports(work, Path(args.results_dir))
    except Exception as exc:  # noqa: BLE001
        print(f"report not rebuilt ({type(exc).__name__}: {exc}); the runs go on", file=sys.stderr, flush=True)


def _config_when_ready(job: Job, plan: Plan | None, args: argparse.Namespace, caps: Caps, work: Path, n_layers: int):
    """The job's config; a run that needs the grid's choice waits for shards still running the grid."""
    waited = 0
    while True:
        try:
            return job_config(job, plan, args, caps, work / job.name, n_layers)
        except GridUnfinished as exc:
            if waited == 0:
                print(f"{job.name} waits: {exc}", flush=True)
            if waited > 6 * 3600:
                raise
            time.sleep(60)
            waited += 60


def shard_jobs(jobs: list[Job], weights: dict[Job, float], k: int, n: int) -> list[Job]:
    """The jobs of shard k of n: in plan order, each job goes to the shard with the least estimated
    work so far (ties to the lower shard), so every shard computes the same split on its own."""
    if n == 1:
        return list(jobs)
    load, out = [0.0] * n, []
    for job in jobs:
        target = min(range(n), key=lambda i: (load[i], i))
        load[target] += weights[job]
        if target == k:
            out.append(job)
    return out


def merged_manifest(old: dict, new: dict) -> dict:
    """The manifest after command `new` on a work dir that `old` (bench.json) describes.

    Commands at the same budget (every cap equal but the seeds) add up: the report then covers
    every column, seed and job either planned (a user who ran `--tasks rte` then `--tasks mrpc`
    expects both in the tables), and lists the commands that rerun them (one whose jobs another
    command's hold is left out, and the estimate stays the listed command's). A
    command at another budget starts a new manifest: its tables never mix runs of two budgets.
    """
    def budget(m: dict) -> tuple:
        return m.get("model"), m.get("method"), m.get("threads"), {k: v for k, v in (m.get("caps") or {}).items() if k != "seeds"}

    if not old.get("jobs") or budget(old) != budget(new):
        return {**new, "commands": [new["command"]], "command_jobs": {new["command"]: new["jobs"]}}
    # Columns in the newer command's order when it names every earlier one, else the earlier ones first.
    columns = new["columns"] if set(old.get("columns", [])) <= set(new["columns"]) else list(dict.fromkeys(old["columns"] + new["columns"]))
    seeds = sorted({int(x) for m in (old, new) for x in str(m["caps"]["seeds"]).split(",") if x.strip()})
    # Each command with its jobs; a command whose jobs another one's hold is dropped: that one reruns them.
    # An older bench.json kept no jobs per command: its commands stay (None: jobs unknown), never dropped.
    every = dict(old.get("command_jobs") or {c: None for c in (old.get("commands") or [old["command"]])})
    every[new["command"]] = new["jobs"]
    order = list(every)

    def covered(c: str) -> bool:
        """Another command's jobs hold c's (of two with the same jobs, the later is kept)."""
        mine = every[c]
        return mine is not None and any(
            o != c and other is not None and set(mine) <= set(other) and (set(mine) < set(other) or order.index(o) > order.index(c))
            for o, other in every.items())

    kept = {c: jobs for c, jobs in every.items() if not covered(c)}
    commands = list(kept)
    # A command whose jobs a listed one holds (`--tasks rte` on the work dir of the whole plan) is not
    # the one the report names: the time estimate it shows stays the listed command's.
    mine = {} if new["command"] in kept else {k: old[k] for k in ("command", "estimate") if k in old}
    return {**new, **mine, "columns": columns, "caps": {**new["caps"], "seeds": ",".join(map(str, seeds))},
            "sweep": list(dict.fromkeys(old.get("sweep", []) + new["sweep"])), "sweep_full": old.get("sweep_full") or new["sweep_full"],
            "paper_protocol": new["paper_protocol"] or old.get("paper_protocol"), "plans": {**old.get("plans", {}), **new["plans"]},
            "jobs": list(dict.fromkeys(old["jobs"] + new["jobs"])), "commands": commands, "command_jobs": kept}


def write_manifest(work: Path, manifest: dict, updated: set[str] = frozenset()) -> None:
    """bench.json in the work dir: command, caps and plans, so the report needs nothing else.

    Shards of one benchmark, and other commands at the same budget, share the file: under a lock
    the file's plan is merged in (`merged_manifest`) and wall times of runs this process did not
    just update are taken from it (`manifest`'s wall_seconds are updated in place), so no process's
    columns or times are lost to another's write. `manifest` keeps this command's own plan: merged
    into it, its jobs would be every command's, and its next write would claim them all, dropping
    the commands that rerun them from the report.
    """
    work.mkdir(parents=True, exist_ok=True)
    with open(work / ".bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            on_disk = json.loads((work / "bench.json").read_text())
        except (OSError, json.JSONDecodeError):
            on_disk = {}
        mine = manifest.setdefault("wall_seconds", {})
        mine.update({k: v for k, v in on_disk.get("wall_seconds", {}).items() if k not in updated})
        atomic_write(work / "bench.json", json.dumps(merged_manifest(on_disk, manifest), indent=1) + "\n")


# ------------------------------------------------------------------------------ command line

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags; every cap defaults to the model's profile."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm-l6", help="olft model alias or folder (default: minilm-l6)")
    p.add_argument("--method", default="adapter", choices=("adapter", "lora", "prefix"))
    p.add_argument("--tasks", default=",".join(t for t, _ in COLUMNS + EXTRA_COLUMNS),
                   help="comma-separated olft task names (default: the paper's 8, then CoLA and STS-B)")
    p.add_argument("--glue-dir", type=Path, default=os.environ.get("GLUE_DIR") or ROOT.parent / "shared" / "glue")
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "work", help="run folders go under WORK_DIR/<model>-<method>/")
    p.add_argument("--results-dir", type=Path, default=ROOT / "docs" / "results")
    p.add_argument("--sweep", default=None, help="tasks whose candidates are every layer (claim 3); '' for none "
                   "(default: per model; rte,mrpc,sst2 otherwise)")
    p.add_argument("--sweep-full", action=argparse.BooleanOptionalAction, default=None,
                   help="also tune every layer of the sweep tasks on the full capped train set, scored on validation (default: per model)")
    p.add_argument("--paper-protocol", default=None,
                   help="task that also runs the paper's selection protocol (--selection-data validation); '' for none (default: "
                   + ", ".join(f"{name} {prof.paper_protocol}" for name, prof in PROFILES.items())
                   + ", rte otherwise; a default is only run when its task is among --tasks)")
    p.add_argument("--extra-seeds", type=int, default=1, help="how many of the seeds also run the sweep and the paper protocol")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on this shared 2-core machine 2 threads ran 3.5x slower per step than 1)")
    p.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS",
                   help="save each run's training state every STEPS optimizer steps, so a stopped run resumes mid-strategy "
                   "(default 50; 0: never). It does not change what a run computes, so it may differ on resume")
    p.add_argument("--report-only", action="store_true", help="only rebuild the report from the run folders")
    p.add_argument("--plan-only", action="store_true", help="print the planned runs and the time estimate, run nothing (it still writes the derived dev "
                   "splits of tasks without train.tsv into the work dir, to count their examples)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="K/N",
                   help="run only shard K of N of the planned runs (split by estimated cost), e.g. 0/2 and 1/2 in two "
                   "processes; they share the work dir and the report")
    for f in fields(Caps):
        per_model = ", ".join(f"{name} {getattr(prof.caps, f.name)!r}" for name, prof in PROFILES.items())
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=None,
                       help=f"(default: {per_model}; {f.default!r} for other models)")
    return p.parse_args(argv)


def _shard(text: str) -> tuple[int, int]:
    """'K/N' -> (K, N), with 0 <= K < N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cannot read shard '{text}': write K/N, e.g. 0/2") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"shard '{text}': need 0 <= K < N, e.g. 0/2 and 1/2")
    return k, n


def resolve_caps(args: argparse.Namespace) -> Caps:
    """The model's default caps, overridden by any cap flag given. A --max-train-samples given
    without --task-train-caps applies to every task: the profile's per-task caps (e.g. SST-2 at
    8,000) were sized for its own budget, and would silently train one task on far more."""
    given = {f.name: getattr(args, f.name) for f in fields(Caps) if getattr(args, f.name) is not None}
    if "max_train_samples" in given and "task_train_caps" not in given:
        given["task_train_caps"] = ""
    return replace(PROFILES.get(args.model, FALLBACK).caps, **given)


def caps_notes(profile: Profile, caps: Caps) -> str:
    """Why the caps are what they are: the profile's reasons when the command kept its caps (seeds
    aside), else which caps the command line changed (the profile's reasons do not apply to them)."""
    changed = [f.name for f in fields(Caps) if f.name != "seeds" and getattr(caps, f.name) != getattr(profile.caps, f.name)]
    if not changed:
        return profile.notes
    return (f"set on the command line: {', '.join('--' + n.replace('_', '-') for n in changed)} differ from the model's profile"
            + (f" (whose reasons, for its own caps: {profile.notes})" if profile.notes else ""))


def _cpu() -> str:
    """The CPU model name (Linux), for the report."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown CPU")


def _split_list(text: str) -> list[str]:
    """Comma-separated task names (any spelling olft accepts) as olft task keys."""
    from olft import tasks

    return [tasks.get_task(t).name for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    """Plan the runs, run what is unfinished, and write the report (exit code as a CLI)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args.glue_dir, args.work_dir = Path(args.glue_dir).resolve(), Path(args.work_dir).resolve()
    work = args.work_dir / model_tag(args.model, args.method)
    if args.report_only:
        write_reports(work, Path(args.results_dir))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    profile, caps = PROFILES.get(args.model, FALLBACK), resolve_caps(args)
    try:
        caps.grid  # noqa: B018  (refuse a malformed grid before anything is written)
    except OlftError as exc:
        print(f"paper.py: error: {exc}", file=sys.stderr)
        return 2
    sweep_full = profile.sweep_full if args.sweep_full is None else args.sweep_full
    columns, sweep = _split_list(args.tasks), _split_list(profile.sweep if args.sweep is None else args.sweep)
    paper_task = next(iter(_split_list(profile.paper_protocol if args.paper_protocol is None else args.paper_protocol)), None)
    if args.paper_protocol is None and paper_task not in columns:
        paper_task = None  # the default protocol task rides along only with its own column; name it to run it alone
    work.mkdir(parents=True, exist_ok=True)
    (work.parent / ".gitignore").write_text("*\n")  # derived data and run folders never go into git
    wanted = dict.fromkeys([*columns, *sweep, *([paper_task] if paper_task else [])])
    plans = {c: plan_column(c, args.glue_dir, work / "data", caps) for c in wanted}
    for task in caps.grid_task_list:
        derive_holdout(task, args.glue_dir, work / "data", caps)
    jobs = plan_jobs(columns, plans, caps, sweep, sweep_full, paper_task, args.extra_seeds)
    n_layers = num_layers_of(args, work)
    plans_by_task = {p.run_task: p for p in plans.values()}
    old = json.loads((work / "bench.json").read_text()) if (work / "bench.json").is_file() else {}
    todo = [j for j in jobs if not is_finished(work / j.name)]
    measured = measured_speed([j for j in jobs if j not in todo], plans_by_task, caps, n_layers, profile, old.get("wall_seconds", {}))
    expected = estimate(jobs, plans_by_task, caps, n_layers, profile, measured, todo)
    print(f"{args.model} / {args.method}: {len(jobs)} runs planned; estimate: {expected}", flush=True)
    if args.plan_only:
        mine = set(shard_jobs(jobs, {j: job_units(j, plans_by_task.get(j.task), caps, n_layers) for j in jobs}, *args.shard))
        speed = measured[0] if measured else profile.speed_ms
        for j in jobs:
            hours = job_units(j, plans_by_task.get(j.task), caps, n_layers) * speed / 3.6e6
            print(f"{j.name:24s} {_dur(hours):>8s}" + ("" if j in todo else "  (finished)") + ("" if j in mine else "  (another shard)"))
        return 0
    manifest = {
        "command": "python benchmarks/paper.py " + shlex.join(recorded_args(argv)), "model": args.model, "method": args.method,
        "caps": asdict(caps), "threads": args.threads, "cpu": _cpu(), "notes": caps_notes(profile, caps), "columns": columns,
        "sweep": sweep, "sweep_full": sweep_full, "paper_protocol": paper_task, "plans": {c: asdict(p) for c, p in plans.items()},
        "jobs": [j.name for j in jobs],
        # With nothing left to run, the report keeps the estimate made before the runs it shows.
        "estimate": old.get("estimate", expected) if not todo else expected, "wall_seconds": old.get("wall_seconds", {}),
    }  # fmt: skip
    write_manifest(work, manifest)
    try:
        run_jobs(jobs, plans, args, caps, work, manifest, n_layers)
    except KeyboardInterrupt:
        print("interrupted: finished pieces are kept; rerun the same command to continue", file=sys.stderr)
        return 130
    except OlftError as exc:
        print(f"paper.py: error: {exc}", file=sys.stderr)
        return 2
    finally:
        write_reports(work, Path(args.results_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
