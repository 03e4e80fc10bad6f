"""Does the selection step find the layer that tunes best? Selection budget and ranking metric.

OLFT picks its layer from short runs: each candidate trains on a small train subset and is
scored on held-out train examples. This benchmark measures how often that pick is the layer a
full-train sweep says is best, for several selection budgets, ranking by held-out score (the
default, as in the paper) and by held-out loss (`--selection-metric loss`).

Ground truth is the paper benchmark's full-train sweep (`sweepfull-<task>-s0`: every layer tuned
alone on the capped train set and scored on validation, at the benchmark's caps); it is run here
first if that folder is not finished. Each budget runs one `olft select --candidates all` per
(task, seed) into the same work dir, resumable; both rankings come from the same candidates.

    python benchmarks/selection_budget.py                    # minilm-l6 adapter, SST-2 and QNLI
    python benchmarks/selection_budget.py --report-only

Writes docs/results/selection-budget-<model>-<method>.{md,json}. Per budget and ranking:
- pick = best layer by the ranking, among the middle third (what OLFT does) and among all layers;
- regret = validation score of the sweep's best layer minus that of the pick (points x100; 0 is
  a perfect pick), over the middle third and over all layers;
- rank correlation (Spearman) between the ranking and the sweep's validation scores, all layers;
- flat = every candidate scored the same held-out score (the score pick is then the tie-break).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from olft.atomic import atomic_write
from olft.errors import OlftError
from olft.select import finished_selection

sys.path.insert(0, str(Path(__file__).resolve().parent))

import paper  # noqa: E402
import paper_report  # noqa: E402

# AxE-B: each candidate trains E epochs on A examples and is scored on B others. The middle one is
# olft's default; the paper benchmark's minilm sweep used it too.
BUDGETS = "200x1-200,500x1-200,500x2-200"


def parse_budget(text: str) -> tuple[int, int, float]:
    """'AxE-B' -> (A, B, E)."""
    try:
        head, scored = text.strip().split("-")
        train, epochs = head.split("x")
        return int(train), int(scored), float(epochs)
    except ValueError:
        raise SystemExit(f"cannot read budget '{text}': write AxE-B, e.g. 500x1-200") from None


def budget_name(budget: tuple[int, int, float]) -> str:
    return f"{budget[0]}x{budget[2]:g}-{budget[1]}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--method", default="adapter", choices=("adapter", "lora", "prefix"))
    p.add_argument("--tasks", default="sst2,qnli", help="default: the tasks where single-layer tuning learns at the paper "
                   "benchmark's minilm caps (on RTE and MRPC every layer ends within noise of chance or at the majority "
                   "class, so there is no best layer to find)")
    p.add_argument("--budgets", default=BUDGETS, help=f"comma-separated AxE-B budgets (default {BUDGETS})")
    p.add_argument("--seeds", default="0,1,2", help="selection seeds (which examples each candidate sees, and its init)")
    p.add_argument("--glue-dir", type=Path, default=os.environ.get("GLUE_DIR") or paper.ROOT.parent / "shared" / "glue")
    p.add_argument("--work-dir", type=Path, default=paper.ROOT / "benchmarks" / "work")
    p.add_argument("--results-dir", type=Path, default=paper.ROOT / "docs" / "results")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-length", type=int, default=None, help="tokens per input (default: the paper benchmark's caps)")
    p.add_argument("--report-only", action="store_true")
    return p.parse_args(argv)


def _spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None  # a constant ranking has no correlation
    return float(spearmanr(a, b).statistic)


def _pick(values: dict[int, float], layers: list[int]) -> int:
    """Best layer among `layers` (higher is better), ties to the lower layer, as olft's selection."""
    return paper_report._best({k: values[k] for k in layers})


def score_run(selection: dict, truth: dict[int, float], middle: list[int]) -> dict:
    """One selection run against the full-train sweep: picks, regrets and rank correlations."""
    cands = [c for c in selection["candidates"] if c["score"] is not None]
    # As olft ranks: by score with the held-out loss breaking ties, or by loss alone.
    rankings = {"score": {c["layer"]: (c["score"], -c["metrics"].get("loss", 0.0)) for c in cands},
                "loss": {c["layer"]: (-c["metrics"]["loss"],) for c in cands if "loss" in c["metrics"]}}
    layers = sorted(truth)
    out: dict = {"flat": len({c["score"] for c in cands}) == 1}
    for name, values in rankings.items():
        if sorted(values) != layers:
            continue
        row = {}
        for scope, pool in (("middle", [k for k in middle if k in values]), ("all", layers)):
            pick = _pick(values, pool)
            row[f"pick_{scope}"] = pick
            row[f"regret_{scope}"] = 100 * (max(truth[k] for k in pool) - truth[pick])
        row["spearman"] = _spearman([values[k][0] for k in layers], [truth[k] for k in layers])
        out[name] = row
    return out


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def collect(args: argparse.Namespace, work: Path) -> dict:
    """Everything the report shows, from the run folders."""
    truth_dir = args.work_dir / paper.model_tag(args.model, args.method)
    tasks_out: dict = {}
    for task in paper._split_list(args.tasks):
        sweep = paper_results(truth_dir / f"sweepfull-{task}-s0")
        if sweep is None:
            continue
        truth = {s["layers"][0]: s["score"] for s in sweep["strategies"].values()}
        middle = sweep["middle_bucket"]
        entry = {"truth": {k: 100 * v for k, v in sorted(truth.items())}, "middle_bucket": middle,
                 "best_all": _pick(truth, sorted(truth)), "best_middle": _pick(truth, middle), "budgets": {}}
        for budget in args.budget_list:
            runs = {}
            for seed in args.seed_list:
                r = paper_results(work / f"{task}-{budget_name(budget)}-s{seed}")
                if r is not None and finished_selection(r):
                    runs[seed] = {**score_run(r["selection"], truth, middle), "seconds": r["selection"]["seconds"]}
            if runs:
                entry["budgets"][budget_name(budget)] = {"runs": runs, "summary": _summary(list(runs.values()))}
        tasks_out[task] = entry
    return {"benchmark": "olft-selection-budget", "model": Path(args.model).name, "method": args.method,
            "command": shlex.join(["python", "benchmarks/selection_budget.py", *args.argv]), "seeds": args.seed_list,
            "truth": f"{truth_dir.name}/sweepfull-<task>-s0 (paper benchmark caps)", "tasks": tasks_out}


def _summary(runs: list[dict]) -> dict:
    out: dict = {"runs": len(runs), "flat": sum(r["flat"] for r in runs), "seconds": _mean([r["seconds"] for r in runs])}
    for name in ("score", "loss"):
        rows = [r[name] for r in runs if name in r]
        out[name] = {key: _mean([row[key] for row in rows]) for key in ("regret_middle", "regret_all", "spearman")}
        out[name]["picks_middle"] = [row["pick_middle"] for row in rows]
        out[name]["picks_all"] = [row["pick_all"] for row in rows]
    return out


def paper_results(folder: Path) -> dict | None:
    """A finished run folder's results, else None."""
    return json.loads((folder / "results.json").read_text()) if paper.is_finished(folder) else None


def render_md(d: dict) -> str:
    lines = [f"# Selection budget: {d['model']}, {d['method']}", "", "```", d["command"], "```", "",
             f"Ground truth: {d['truth']}: every layer tuned alone on the capped train set, scored on validation. "
             f"Selection runs: `--candidates all`, seeds {', '.join(map(str, d['seeds']))}; budget `AxE-B` = each "
             "candidate trains E epoch(s) on A train examples and is scored on B other train examples. "
             "Regret: points (x100) of validation score lost against the sweep's best layer (0 = perfect pick), mean over "
             "seeds; `middle` = picking among the middle third as OLFT does, `all` = among every layer. Spearman: rank "
             "correlation of the ranking with the sweep's validation scores over all layers (mean over seeds; '-' where a "
             "ranking is constant). Flat: seeds where every candidate scored the same.", ""]
    for task, e in d["tasks"].items():
        truth = ", ".join(f"{k}: {v:.1f}" for k, v in e["truth"].items())
        lines += [f"## {dict(paper.COLUMNS).get(task, task)}", "",
                  f"Full-train sweep (validation x100): {truth}; best layer {e['best_all']}, best in the middle third "
                  f"({e['middle_bucket'][0]}-{e['middle_bucket'][-1]}) {e['best_middle']}.", "",
                  "| budget | ranking | picks (middle) | regret middle | picks (all) | regret all | Spearman | flat | s per run |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for _task, name, rank, r, s in paper_report.selection_budget_rows(d, [task]):
            lines.append(f"| {name} | {rank} | {r['picks_middle']} | {paper_report._f(r['regret_middle'])} | {r['picks_all']} | "
                         f"{paper_report._f(r['regret_all'])} | {paper_report._f(r['spearman'], 2)} | {s['flat']}/{s['runs']} | {paper_report._f(s['seconds'], 0)} |")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace, work: Path) -> None:
    """Ground-truth sweeps first (shared with the paper benchmark), then every selection run."""
    import torch

    from olft import api

    torch.set_num_threads(args.threads)
    length = ["--max-length", str(args.max_length)] if args.max_length is not None else []
    bench_args = paper.parse_args(["--model", args.model, "--method", args.method, "--glue-dir", str(args.glue_dir), *length])
    caps = paper.resolve_caps(bench_args)
    truth_dir = args.work_dir / paper.model_tag(args.model, args.method)
    tasks = paper._split_list(args.tasks)
    plans = {t: paper.plan_column(t, args.glue_dir, truth_dir / "data", caps) for t in tasks}
    n_layers = paper.num_layers_of(bench_args, truth_dir)
    jobs = []
    for task in tasks:
        jobs.append(("truth", task, truth_dir / f"sweepfull-{task}-s0",
                     paper.job_config(paper.Job("sweepfull", task, 0), plans[task], bench_args, caps, truth_dir / f"sweepfull-{task}-s0", n_layers)))
    for seed in args.seed_list:  # seed by seed, so a partial run already compares every budget
        for budget in args.budget_list:
            for task in tasks:
                out = work / f"{task}-{budget_name(budget)}-s{seed}"
                cfg = paper.job_config(paper.Job("sweep", task, seed), plans[task], bench_args, caps, out, n_layers)
                cfg.selection = replace(cfg.selection, selection_train_samples=budget[0], selection_eval_samples=budget[1],
                                        selection_epochs=budget[2], selection_adaptive=0)
                jobs.append(("select", task, out, cfg))
    todo = [j for j in jobs if not paper.is_finished(j[2])]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs already finished; {len(todo)} to go in {work}", flush=True)
    for i, (kind, _task, out, cfg) in enumerate(todo, 1):
        t0 = time.perf_counter()
        (api.run if kind == "truth" else api.select_layer)(cfg, quiet=True)
        print(f"[{i}/{len(todo)}] {out.name} finished in {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        write(args, work)


def write(args: argparse.Namespace, work: Path) -> None:
    d = collect(args, work)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"selection-budget-{paper.model_tag(args.model, args.method)}"
    atomic_write(stem.with_suffix(".json"), json.dumps(d, indent=1) + "\n")
    atomic_write(stem.with_suffix(".md"), render_md(d))
    atomic_write(args.results_dir / "README.md", paper_report.readme(args.results_dir))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = [a for a in argv if a != "--report-only"]  # the command that makes the runs
    args.seed_list = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.budget_list = [parse_budget(b) for b in args.budgets.split(",") if b.strip()]
    args.glue_dir, args.work_dir = Path(args.glue_dir).resolve(), Path(args.work_dir).resolve()
    work = args.work_dir / f"selection-budget-{paper.model_tag(args.model, args.method)}"
    if not args.report_only:
        try:
            run(args, work)
        except KeyboardInterrupt:
            print("interrupted: finished runs are kept; rerun the same command to continue", file=sys.stderr)
            return 130
        except OlftError as exc:
            print(f"selection_budget.py: error: {exc}", file=sys.stderr)
            return 2
    write(args, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
