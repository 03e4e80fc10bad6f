"""How often does each layer selector pick the layer that tunes best, and at what cost?

The oracle: every candidate layer tuned alone on the run's full training budget (the capped
train set, `--epochs` epochs; the same budget `olft run` gives the chosen layer) and scored on
validation. Each selector then chooses from the same capped train set alone (fit and score
subsets drawn from it, never from validation), and is compared with the oracle:

- top-1 / top-3: the pick is the oracle's best layer / among its three best;
- regret: the oracle's best validation score minus that of the picked layer, in points (x100);
- Spearman: rank correlation of the selector's ranking with the oracle's validation scores;
- flat: every candidate ranked the same (the pick is the tie-break);
- cost: the selector's seconds, and as a fraction of exhaustive's on the same (task, seed).

One process per model; everything is resumable: every finished piece (an oracle layer, a
selector's result, and within a selector that trains, each candidate it finished) is one JSON
file under `--work-dir`, skipped or taken as it is when found. Run it in the
background with one torch thread and rebuild the report at any time:

    nohup python benchmarks/selection.py --model minilm-l6 > benchmarks/work/minilm.log 2>&1 &
    python benchmarks/selection.py --model minilm-l6 --report-only

Writes docs/results/selection-<model>.{md,json,png} (see `selection_report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cmdline import recorded_args  # noqa: E402

log = logging.getLogger("selection-bench")

# Selector setups compared: name -> SelectionConfig overrides. "exhaustive" is the reference cost.
SETUPS: dict[str, dict] = {
    "probe": {"selector": "probe"},
    "gradient": {"selector": "gradient"},
    "exhaustive-50": {"selector": "exhaustive", "selection_adaptive": 0, "selection_steps": 50},
    "probe-halving": {"selector": "probe-halving", "selection_adaptive": 0},
    "probe-keep2": {"selector": "probe-halving", "probe_keep": 2, "selection_adaptive": 0},
    "exhaustive": {"selector": "exhaustive", "selection_adaptive": 0},
    "halving": {"selector": "halving", "selection_adaptive": 0},
    # The probe on fewer than 8 candidates, probe-keep-(N//4) from 8 up: the same runs as those setups.
    "auto": {"selector": "auto", "selection_adaptive": 0},
}


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags, each with its unit, default and where that default comes from."""
    from olft.config import MethodConfig, TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm-l6", help="olft model alias or folder (default: %(default)s)")
    p.add_argument("--method", default=MethodConfig.method, choices=("adapter", "lora", "prefix"),
                   help="PEFT method every oracle layer and trained candidate is tuned with (default: %(default)s, olft's)")
    p.add_argument("--tasks", default="sst2,cola,stsb,mrpc",
                   help="comma-separated olft task names; each task and seed is one unit (default: %(default)s)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (data order and subsets, initialisation) per task (default: %(default)s)")
    p.add_argument("--candidates", default=None,
                   help="layers compared, in olft's --candidates form (middle, all, 4-9, 3,5,7; 0-based) (default: every "
                        "layer of a model with up to 12, else the middle third)")  # fmt: skip
    p.add_argument("--max-train-samples", type=int, default=2000,
                   help="training examples per unit (random, seeded): the oracle's training set and what every selector "
                        "draws its fit and score subsets from (default: %(default)s, make demo's cap)")  # fmt: skip
    p.add_argument("--max-eval-samples", type=int, default=1000,
                   help="validation examples the oracle layers are scored on (default: %(default)s)")
    p.add_argument("--epochs", type=float, default=TrainConfig.epochs,
                   help="epochs each oracle layer is tuned for (default: %(default)s, olft run's --epochs)")
    p.add_argument("--setups", default=",".join(SETUPS),
                   help=f"comma-separated selector setups, from {', '.join(SETUPS)}; exhaustive is the cost reference "
                        "(default: all of them)")  # fmt: skip
    p.add_argument("--phase", default="all", choices=("all", "oracle", "selectors"),
                   help="what to run: the oracle, the selectors, or both (default: %(default)s)")
    p.add_argument("--glue-dir", type=Path, default=os.environ.get("GLUE_DIR") or ROOT.parent / "shared" / "glue",
                   help="GLUE folder in the original layout (default: $GLUE_DIR, else ../shared/glue beside the repo)")
    p.add_argument("--work-dir", type=Path, default=ROOT / "benchmarks" / "work" / "selection",
                   help="one JSON per finished piece under WORK_DIR/<model>-<method>/<task>-s<seed>/; found pieces are "
                        "skipped (default: benchmarks/work/selection)")  # fmt: skip
    p.add_argument("--results-dir", type=Path, default=ROOT / "docs" / "results",
                   help="where selection-<model>-<method>.{md,json,png} are written (default: docs/results)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on this shared 2-core machine 2 threads ran 3.5x slower per step than 1)")
    p.add_argument("--report-only", action="store_true",
                   help="only rebuild the report from the pieces under the work dir, run nothing (default: off)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _save(path: Path, obj: dict) -> None:
    from olft.report import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, obj)


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def session_for(args: argparse.Namespace, task: str, seed: int):
    from olft.config import DataConfig, MethodConfig, ModelConfig, RunConfig, SelectionConfig, TrainConfig
    from olft.pipeline import Session

    cfg = RunConfig(
        model=ModelConfig(args.model),
        data=DataConfig(task=task, glue_dir=str(args.glue_dir), max_train_samples=args.max_train_samples,
                        max_eval_samples=args.max_eval_samples),
        method=MethodConfig(args.method), train=TrainConfig(epochs=args.epochs, seed=seed),
        selection=SelectionConfig(candidates=args.candidates or "all"),
    )  # fmt: skip
    return Session(cfg, quiet=True)


def candidates_of(args: argparse.Namespace, num_layers: int) -> list[int]:
    from olft.layerspec import middle_bucket, parse_candidates

    if args.candidates:
        return parse_candidates(args.candidates, num_layers)
    return list(range(num_layers)) if num_layers <= 12 else middle_bucket(num_layers)


def run_oracle(session, folder: Path, layers: list[int]) -> None:
    for layer in layers:
        path = folder / f"oracle-{layer}.json"
        if path.is_file():
            continue
        cfg = session.cfg
        t0 = time.perf_counter()
        r = session.tune([layer], session.train_enc, session.eval_enc, epochs=cfg.train.epochs, max_steps=None,
                         desc=f"oracle {layer}")  # fmt: skip
        entry = {"layer": layer, "score": r.score, "metrics": r.metrics, "train_seconds": r.train_seconds,
                 "seconds": time.perf_counter() - t0, "steps": r.steps}  # fmt: skip
        _save(path, entry)
        log.info("%s oracle layer %d: %.4f (%.0fs)", folder.name, layer, r.score, entry["seconds"])


def run_selectors(session, folder: Path, layers: list[int], setups: list[str]) -> None:
    """Each setup's selection, saved as select-<setup>.json. A setup that trains candidates saves
    each finished one (and its probe stage) under select-<setup>.pieces/ as `olft run` does, so a
    stopped unit continues from them (exhaustive on 10 smollm2 candidates is over an hour); its
    cost still counts every candidate's recorded seconds. The pieces go once the setup's file is written."""
    import shutil

    from olft.select import Candidate

    spec = ",".join(map(str, layers))
    base = session.cfg.selection  # every setup starts from it: one setup's overrides must not leak into the next
    for name in setups:
        path = folder / f"select-{name}.json"
        pieces = folder / f"select-{name}.pieces"
        if path.is_file():
            continue
        done = {}
        for piece in sorted(pieces.glob("candidate-*.json")):
            if (c := _load(piece)) is not None:
                done[(c["layer"], c["steps"])] = Candidate(**c)
        if done:
            log.info("%s %s: continuing from %d finished candidate(s)", folder.name, name, len(done))
        session.cfg = replace(session.cfg, selection=replace(base, candidates=spec, **SETUPS[name]))
        t0 = time.perf_counter()
        sel = session.select(on_candidate=lambda c, d=pieces: _save(d / f"candidate-{c.layer}-{c.steps}.json", asdict(c)),
                             done=done, on_probe=lambda piece, d=pieces: _save(d / "probe.json", piece),
                             probed=_load(pieces / "probe.json"))  # fmt: skip
        entry = {"setup": name, "config": SETUPS[name], "wall_seconds": time.perf_counter() - t0, **sel.to_dict()}
        if done:  # this process's wall time misses the candidates an earlier one trained
            entry["resumed_candidates"] = len(done)
        _save(path, entry)
        shutil.rmtree(pieces, ignore_errors=True)
        log.info("%s %s: layer %s, %.0fs", folder.name, name, entry["selected_layer"], entry["wall_seconds"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from selection_report import write_report

    work = args.work_dir / f"{args.model}-{args.method}"
    command = "python benchmarks/selection.py " + shlex.join(recorded_args(argv or sys.argv[1:]))
    planned = len(args.tasks.split(",")) * len(args.seeds.split(","))
    interrupted = False
    if not args.report_only:
        import torch

        torch.set_num_threads(args.threads)
        setups = [s.strip() for s in args.setups.split(",") if s.strip()]
        unknown = [s for s in setups if s not in SETUPS]
        if unknown:
            raise SystemExit(f"unknown setup {unknown[0]}: use {', '.join(SETUPS)}")
        try:
            for seed in (int(s) for s in args.seeds.split(",")):
                for task in (t.strip() for t in args.tasks.split(",")):
                    folder = work / f"{task}-s{seed}"
                    session = session_for(args, task, seed)
                    layers = candidates_of(args, session.num_layers)
                    if args.phase in ("all", "oracle"):
                        run_oracle(session, folder, layers)
                    if args.phase in ("all", "selectors"):
                        run_selectors(session, folder, layers, setups)
                    write_report(work, args.results_dir, args.model, args.method, command, planned)
        except KeyboardInterrupt:  # a piece is written whole or not at all: rerunning continues
            print("interrupted: finished pieces are kept; rerun the same command to continue", file=sys.stderr)
            interrupted = True
    if not write_report(work, args.results_dir, args.model, args.method, command, planned) and args.report_only:
        raise SystemExit(f"no finished pieces in {work}: nothing to report. Run the benchmark first (without "
                         "--report-only), or point --work-dir at the pieces (the smollm2-135m ones are kept in "
                         "benchmarks/results/selection-pieces); a committed report prints with "
                         f"python benchmarks/selection_report.py {args.results_dir}/selection-{args.model}-{args.method}.json")
    return 130 if interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
