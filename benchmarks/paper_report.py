"""The paper benchmark's report, rebuilt from run folders alone (see `paper.py`).

`collect` reads the work dir (bench.json plus one olft run folder per job) into one dict, which is
written as `<model>-<method>.json`; the Markdown (Table 1, Table 2, selection time, layer sweep,
the paper's protocol, data, environment) and the per-layer plot are rendered from that dict only,
so `--report-only` reproduces exactly what a run wrote. `README.md` compares every model's
outcome with the paper's four claims.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from cmdline import recorded_command

from olft.atomic import atomic_path, atomic_write
from olft.select import finished_selection

STRATEGIES = (("olft", "OLFT"), ("final", "final-layer"), ("full", "all-layer"))
HEADERS = {"sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "mnli": "MNLI-m", "mnli-mm": "MNLI-mm", "qnli": "QNLI", "cola": "CoLA", "stsb": "STS-B",
           "rte": "RTE", "wnli": "WNLI"}
PAPER = {  # the paper's claims, as numbers
    "claim1": "OLFT beats final-layer tuning by +10.5 to +12.3 GLUE average",
    "claim2": "OLFT is comparable to all-layer tuning: -1.3 to +5.9 GLUE average",
    "claim3": "the best single layer lies in the middle third",
    "claim4": "OLFT trains in 39-69 % of all-layer time with about 3 % of its PEFT parameters",
}


GRID_SEED = 0  # the learning-rate grid runs once, at this seed


def grid_results(work: Path, caps: dict) -> dict | None:
    """The learning-rate grid as its run folders hold it (None without a grid): {"values", "tasks",
    "scores": {strategy: {lr: {task: held-out score x100}}}, "means": {strategy: {lr: mean over the
    grid tasks}}, "chosen": {strategy: lr} (None until every grid run finished), "missing": [runs]}.

    Each strategy takes the rate with the best mean held-out score over the grid tasks; ties go to
    the lower rate (the one less likely to diverge). Run folders are named lr<rate>-<task>-s0.
    """
    values = [float(x) for x in str(caps.get("lr_grid") or "").split(",") if x.strip()]
    if not values:
        return None
    tasks = [t for t in caps["grid_tasks"].split(",") if t.strip()]
    scores: dict[str, dict[str, dict[str, float]]] = {}
    missing = []
    for task in tasks:
        for lr in values:
            name = f"lr{lr:g}-{task}-s{GRID_SEED}"
            r = _load(work / name / "results.json")
            if not r or r.get("status") != "complete":
                missing.append(name)
                continue
            for strategy, entry in r["strategies"].items():
                scores.setdefault(strategy, {}).setdefault(f"{lr:g}", {})[task] = 100 * entry["score"]
    means = {name: {lr: statistics.fmean(v.values()) for lr, v in by_lr.items() if len(v) == len(tasks)}
             for name, by_lr in scores.items()}
    chosen = None
    if not missing:
        chosen = {name: float(max(m, key=lambda lr: (m[lr], -float(lr)))) for name, m in means.items()}
    return {"values": values, "tasks": tasks, "train_samples": caps["grid_train_samples"],
            "holdout_samples": caps["grid_holdout_samples"], "seed": GRID_SEED, "scores": scores, "means": means,
            "chosen": chosen, "missing": missing}


def _load(path: Path) -> dict | None:
    """A JSON file's content, or None when missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _stats(per_seed: dict[str, float]) -> dict:
    """Mean and sample standard deviation over seeds (None where undefined)."""
    values = list(per_seed.values())
    return {"per_seed": per_seed, "n": len(values), "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def _score(entry: dict, split: str | None, metric: str) -> float | None:
    """A strategy's score on `split` (None: its headline split)."""
    if split is None:
        return entry.get("score")
    return entry.get("metrics", {}).get(split, {}).get(metric)


def _column(plan: dict, seeds: list[int], runs: dict[str, dict]) -> dict:
    """One Table 1 column: per strategy the score (x100), train time and chosen layer per seed."""
    cell: dict = {"note": plan["note"], "derived": plan["source"] == "file", "strategies": {}, "selection_seconds": {}}
    for name, _ in STRATEGIES:
        scores, times, cpu, layers, failed, lrs, loads, scopes = {}, {}, {}, {}, [], {}, {}, {}
        for seed in map(str, seeds):
            r = runs.get(f"{plan['run_task']}-s{seed}")
            if not r:
                continue
            entry = r["strategies"].get(name)
            if name in r.get("failed", {}):
                failed.append(seed)
            if entry and _score(entry, plan["split"], r["metric"]) is not None:
                scores[seed] = 100 * _score(entry, plan["split"], r["metric"])
                # resumed from a checkpoint written by an olft that kept no time in it: its time counts only the
                # steps after the checkpoint, no time to compare (a newer one adds the earlier run's time)
                if entry.get("resumed_at") and entry.get("seconds_before_resume") is None:
                    cell.setdefault("partial_time", []).append(f"{plan['run_task']}-s{seed} {name}")
                else:
                    times[seed] = entry["train_seconds"]
                if entry.get("train_cpu_seconds") and seed in times:
                    cpu[seed] = entry["train_cpu_seconds"]
                lrs[seed] = entry.get("lr") or r.get("config", {}).get("train", {}).get("lr")
                loads[seed] = (entry.get("timed_by") or {}).get("load_average")
                scopes[seed] = (entry.get("timed_by") or {}).get("cpu_scope")  # None: an olft that also counted eval caches
                layers[seed] = entry["layers"]
                cell["peft_params"] = cell.get("peft_params", {}) | {name: entry["peft_params"]}
                cell["all_layer_peft_params"] = r["all_layer_peft_params"]
            # A run killed mid-selection has an unfinished selection with no time recorded yet: no cost to report.
            if name == "olft" and (sel := finished_selection(r)):
                cell["selection_seconds"][seed] = sel["seconds"]
                if sel.get("cpu_seconds") is not None:
                    cell.setdefault("selection_cpu_seconds", {})[seed] = sel["cpu_seconds"]
        cell["strategies"][name] = {**_stats(scores), "train_seconds": times, "train_cpu_seconds": cpu, "layers": layers,
                                    "failed": failed, "lr": lrs, "load_average": loads,
                                    "cpu_scope": scopes}
    per_layer: dict[int, list[float]] = {}
    for seed in map(str, seeds):
        selection = finished_selection(runs.get(f"{plan['run_task']}-s{seed}") or {}) or {}
        for c in selection.get("candidates", []):
            if c["score"] is not None:
                per_layer.setdefault(c["layer"], []).append(100 * c["score"])
    cell["candidates"] = {layer: statistics.fmean(v) for layer, v in sorted(per_layer.items())}
    return cell


PAPER_TASKS = ("sst2", "mrpc", "qqp", "mnli", "mnli-mm", "qnli", "rte", "wnli")


def _paper_average(table: dict, avg: dict) -> dict:
    """The average claims 1 and 2 are judged on: over the paper's eight tasks only (CoLA and
    STS-B, which it did not report, would move a GLUE-average claim); all columns if none is there."""
    paper = {c: cell for c, cell in table.items() if c in PAPER_TASKS}
    return _averages(paper) if paper and _averages(paper)["tasks"] else avg


def _averages(table: dict) -> dict:
    """Avg column over the tasks where every strategy has a score (the same tasks for each)."""
    common = [c for c, cell in table.items() if all(cell["strategies"][s]["n"] for s, _ in STRATEGIES)]
    out: dict = {"tasks": common}
    for name, _ in STRATEGIES:
        means = [table[c]["strategies"][name]["mean"] for c in common]
        seeds = set.intersection(*(set(table[c]["strategies"][name]["per_seed"]) for c in common)) if common else set()
        per_seed = {s: statistics.fmean(table[c]["strategies"][name]["per_seed"][s] for c in common) for s in sorted(seeds)}
        out[name] = {"mean": statistics.fmean(means) if means else None,
                     "std": statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None, "per_seed": per_seed}
    return out


def _costs(table: dict, num_layers: int | None = None) -> dict:
    """Table 2: time and parameters over the (task, seed) runs where all three strategies finished.

    Times are CPU seconds of the run's process where every run recorded them, counting the same
    work (`cpu_scope` of their `timed_by`: olft before it also counted building the evaluation
    caches), `basis` "cpu" (with one torch thread they count the work alone, whatever else the
    machine ran); else wall seconds, and `cpu_scopes_differ` says why where that was the reason.
    `whole_run_vs_all_layer_per_task`: OLFT's selection plus its tuning over all-layer tuning (x100),
    per task; selection in CPU seconds on the CPU basis where every run recorded them, else wall
    (`selection_basis`).
    `stack_share_percent_per_task`: the share (x100, mean over seeds) of the `num_layers` layers
    that OLFT's chosen layer k leaves in its training step, (L - k) / L: the layers below k run
    once, into the activation cache, so OLFT's time % sits near (or, on short inputs, above) this
    share whatever the selector.
    """
    st_all = [cell["strategies"][n] for cell in table.values() for n, _ in STRATEGIES]
    recorded = bool(st_all) and all(set(s["train_cpu_seconds"]) == set(s["train_seconds"]) for s in st_all)
    scopes = {scope for s in st_all for seed, scope in s.get("cpu_scope", {}).items() if seed in s["train_seconds"]}
    cpu = recorded and len(scopes) <= 1
    key = "train_cpu_seconds" if cpu else "train_seconds"
    sel_cpu = cpu and all(set(c.get("selection_cpu_seconds", {})) == set(c["selection_seconds"]) for c in table.values())
    sel_key = "selection_cpu_seconds" if sel_cpu else "selection_seconds"
    sums = {name: 0.0 for name, _ in STRATEGIES}
    sel, pairs, per_task, whole, share, loads = 0.0, 0, {}, {}, {}, []
    for col, cell in table.items():
        st = cell["strategies"]
        seeds = set(st["olft"][key]) & set(st["final"][key]) & set(st["full"][key])
        seeds &= set(cell["selection_seconds"])
        for seed in seeds:
            for name, _ in STRATEGIES:
                sums[name] += st[name][key][seed]
                loads.append((st[name].get("load_average") or {}).get(seed))
            sel += cell[sel_key][seed]
            pairs += 1
        if seeds:
            full = sum(st["full"][key][s] for s in seeds)
            per_task[col] = 100 * sum(st["olft"][key][s] for s in seeds) / full
            whole[col] = 100 * sum(st["olft"][key][s] + cell[sel_key][s] for s in seeds) / full
            if num_layers:
                share[col] = 100 * statistics.fmean((num_layers - st["olft"]["layers"][s][0]) / num_layers for s in seeds)
    params = next((c["peft_params"] for c in table.values() if len(c.get("peft_params", {})) == 3), None)
    all_params = next((c["all_layer_peft_params"] for c in table.values() if "all_layer_peft_params" in c), None)
    seen = [x for x in loads if x]
    partial = sorted({p for c in table.values() for p in c.get("partial_time", [])})
    out: dict = {"runs": pairs, "basis": "cpu" if cpu else "wall", "selection_basis": "cpu" if sel_cpu else "wall",
                 "partial_time": partial,
                 "cpu_scopes_differ": recorded and not cpu, "cpu_scope": next(iter(scopes), None) if cpu else None,
                 "olft_time_percent_per_task": per_task,
                 "whole_run_vs_all_layer_per_task": whole, "stack_share_percent_per_task": share,
                 "all_layer_peft_params": all_params,
                 "load_average_15min": [min(x[2] for x in seen), max(x[2] for x in seen)] if seen else None}
    for name, _ in STRATEGIES:
        out[name] = {"minutes_per_run": sums[name] / pairs / 60 if pairs else None,
                     "time_percent": 100 * sums[name] / sums["full"] if pairs and sums["full"] else None,
                     "peft_params": params[name] if params else None,
                     "param_percent": 100 * params[name] / all_params if params and all_params else None}
    out["selection"] = {"minutes_per_run": sel / pairs / 60 if pairs else None,
                        "olft_plus_selection_percent": 100 * (sums["olft"] + sel) / sums["full"] if pairs and sums["full"] else None}
    return out


def _best(scores: dict[int, float]) -> int | None:
    """The best-scoring layer; ties go to the lower layer, as in olft's selection."""
    return min(_tied_best(scores), default=None)


def _tied_best(scores: dict[int, float]) -> list[int]:
    """Every layer sharing the top score: a tie says the sweep cannot tell those layers apart."""
    top = max(scores.values(), default=None)
    return sorted(layer for layer, v in scores.items() if v == top)


def _sweep(manifest: dict, runs: dict[str, dict], table: dict) -> dict:
    """Per sweep task: score per layer (held-out train, and full-train validation if run), best layers.

    `evidence` names the per-layer values claim 3 is judged on: full-train validation scores if
    that sweep ran; else held-out train scores; else, where every held-out score ties (all
    candidates predicting alike) and the candidates recorded a held-out loss, that loss (lower is
    better), which still orders the layers.
    """
    out = {}
    for col in manifest["sweep"]:
        task = manifest["plans"][col]["run_task"]
        holdout: dict[int, list[float]] = {}
        losses: dict[int, list[float]] = {}
        full: dict[int, list[float]] = {}
        middle = None
        scored = {"holdout": 0, "validation": 0}  # examples behind one per-layer score
        for name, r in runs.items():
            if name.startswith(f"sweep-{task}-s") and finished_selection(r):
                middle = r["middle_bucket"]
                scored["holdout"] = r["selection"].get("score_examples", 0)
                for c in r["selection"]["candidates"]:
                    if c["score"] is not None:
                        holdout.setdefault(c["layer"], []).append(100 * c["score"])
                        if "loss" in c.get("metrics", {}):
                            losses.setdefault(c["layer"], []).append(c["metrics"]["loss"])
            if name.startswith(f"sweepfull-{task}-s"):
                middle = r["middle_bucket"]
                scored["validation"] = next(iter((r.get("eval_examples") or {"": 0}).values()))
                for entry in r["strategies"].values():
                    full.setdefault(entry["layers"][0], []).append(100 * entry["score"])
        means = {kind: {k: statistics.fmean(v) for k, v in sorted(values.items())}
                 for kind, values in (("holdout", holdout), ("validation", full), ("holdout_loss", losses))}
        chosen = sorted(set(v[0] for v in table.get(col, {}).get("strategies", {}).get("olft", {}).get("layers", {}).values()))
        out[col] = _judged(means, middle, scored, chosen, _metric_of(task, runs))
    return out


def _metric_of(task: str, runs: dict[str, dict]) -> str:
    """The metric a task's runs (main, sweep or full-train sweep) were scored with; accuracy if none finished."""
    prefixes = tuple(f"{kind}{task}-s" for kind in ("", "sweep-", "sweepfull-"))
    return next((r["metric"] for n, r in runs.items() if n.startswith(prefixes) and r.get("metric")), "accuracy")


def _judged(means: dict[str, dict], middle: list[int] | None, scored: dict[str, int], chosen: list[int],
            metric: str = "accuracy") -> dict:
    """One swept task's entry: per kind of per-layer values (`means`: holdout, validation,
    holdout_loss) the best layer(s), whether they lie in the middle third (None: no signal or
    within two standard errors of `metric` on `scored` examples), and the evidence claim 3 is judged on."""
    entry: dict = {"middle_bucket": middle, **means, "olft_chose": chosen, "metric": metric}
    for kind, scores in means.items():
        ranked = {k: -v for k, v in scores.items()} if kind == "holdout_loss" else scores  # higher is better
        best, tied = _best(ranked), _tied_best(ranked)
        entry[f"best_{kind}"] = best
        entry[f"best_{kind}_tied"] = tied
        # A sweep where every layer scores the same (e.g. all predict the majority class) carries no
        # evidence on where the best layer lies: None, not False, and the claim leaves that task out.
        entry[f"no_signal_{kind}"] = len(ranked) > 1 and len(tied) == len(ranked)
        entry[f"best_{kind}_in_middle"] = (None if best is None or middle is None or entry[f"no_signal_{kind}"]
                                           else any(layer in middle for layer in tied))
        if middle is not None and ranked and all(k in middle for k in ranked):
            # A sweep of the middle third alone (the selection benchmark's oracle on a model whose
            # candidates are that third) has nothing outside to compare: the best is "in the middle"
            # by construction, which is no evidence for the claim.
            entry[f"best_{kind}_in_middle"] = None
            entry[f"middle_only_{kind}"] = True
        if kind in scored and entry[f"best_{kind}_in_middle"] is not None:
            # Inside vs outside the middle third: a gap within two standard errors of the
            # scoring set is noise, and says nothing about where the best layer lies.
            inside = [v for k, v in ranked.items() if k in middle]
            outside = [v for k, v in ranked.items() if k not in middle]
            noise = _two_se(max(ranked.values()), scored[kind], metric)
            entry[f"noise_{kind}"] = noise
            if inside and outside and noise is not None and abs(max(inside) - max(outside)) <= noise:
                entry[f"best_{kind}_in_middle"] = None
                entry[f"within_noise_{kind}"] = True
        entry[f"best_{kind}_in_middle_bucket"] = _best({k: v for k, v in ranked.items() if middle and k in middle})
    evidence = ("validation" if means["validation"] else "holdout_loss"
                if entry["no_signal_holdout"] and means["holdout_loss"] else "holdout")
    entry["evidence"] = evidence
    tied = entry[f"best_{evidence}_tied"]
    entry["olft_matches_best"] = (None if not tied or not chosen or entry[f"no_signal_{evidence}"]
                                  else set(chosen) <= set(tied))
    return entry


def oracle_sweeps(results_dir: Path | None, tag: str) -> dict[str, dict]:
    """Per task, the selection benchmark's oracle (`selection-<tag>.json`: every candidate layer
    tuned on its capped train set and scored on validation) as {layer: mean score x100 over seeds}
    plus the seeds it averages; {} when that report does not exist."""
    d = _load(results_dir / f"selection-{tag}.json") if results_dir else None
    per: dict[str, dict[str, dict[int, float]]] = {}
    for row in (d or {}).get("rows", []):
        task, seed = row["unit"].rsplit("-s", 1)
        per.setdefault(task, {})[seed] = {int(k): v for k, v in row["oracle"].items()}
    out = {}
    for task, seeds in per.items():
        layers = sorted(set.intersection(*(set(v) for v in seeds.values())))
        out[task] = {"scores": {k: statistics.fmean(v[k] for v in seeds.values()) for k in layers},
                     "seeds": sorted(seeds), "command": d.get("command")}
    return out


def _oracle_entry(task: str, oracle: dict, middle: list[int] | None, scored: int, chosen: list[int],
                  metric: str = "accuracy") -> dict:
    """A sweep entry (as `_sweep` makes) from the selection oracle: judged by validation."""
    entry = _judged({"holdout": {}, "validation": oracle["scores"], "holdout_loss": {}}, middle,
                    {"holdout": 0, "validation": scored}, chosen, metric)
    return {**entry, "source": f"selection benchmark oracle, seeds {','.join(oracle['seeds'])}"}

CORRELATIONS = ("mcc", "pearson", "spearman")


def _two_se(score: float, n: int, metric: str = "accuracy") -> float | None:
    """Two standard errors (points x100) of a `metric` score near `score` (x100) on n examples.

    Accuracy and F1: the binomial sqrt(p(1-p)/n) (F1 treated as a proportion, an approximation),
    with p(1-p) floored at 0.25/n so a perfect score still has an error. Correlations (MCC is
    Pearson's r on the 0/1 labels; Pearson, Spearman): the large-sample (1 - r^2) / sqrt(n - 1),
    floored at 1/n; a binomial error of r/100 as a proportion would be meaningless (r can be < 0).
    """
    if not n:
        return None
    if metric in CORRELATIONS:
        r = min(max(score / 100, -1.0), 1.0)
        return 200 * max((1 - r * r) / math.sqrt(max(n - 1, 1)), 1 / n)
    p = min(max(score / 100, 0.0), 1.0)
    return 200 * math.sqrt(max(p * (1 - p), 0.25 / n) / n)


def _paper_protocol(manifest: dict, runs: dict[str, dict]) -> dict | None:
    """OLFT under the paper's selection protocol beside the default, on the same seeds."""
    col = manifest.get("paper_protocol")
    if not col:
        return None
    plan, out = manifest["plans"][col], {"task": col}
    for kind, prefix in (("train-holdout", ""), ("validation", "paper-")):
        layers, scores = {}, {}
        for name, r in runs.items():
            if name.startswith(f"{prefix}{plan['run_task']}-s") and "olft" in r["strategies"] and finished_selection(r):
                if not prefix and f"paper-{name}" not in runs:
                    continue  # compare the same seeds only
                seed = name.rsplit("-s", 1)[1]
                layers[seed] = r["selection"]["selected_layer"]
                scores[seed] = 100 * _score(r["strategies"]["olft"], plan["split"], r["metric"])
        out[kind] = {"layers": layers, **_stats(scores)}
    return out


def _missing(manifest: dict, runs: dict[str, dict]) -> list[str]:
    """Planned runs that have not finished, with what they hold so far."""
    out = []
    for name in manifest["jobs"]:
        r = runs.get(name)
        if r is None:
            out.append(f"{name}: not started")
        elif r.get("status") != "complete":
            done = ", ".join(r["strategies"]) or "nothing"
            out.append(f"{name}: {r.get('status')} (finished: {done}{'; failed: ' + ', '.join(r['failed']) if r.get('failed') else ''})")
    return out


def _chose(sweep_entry: dict) -> str:
    """What OLFT chose in the main runs of a sweep task, and whether it is the sweep's best."""
    if not sweep_entry["olft_chose"]:
        return "no main run yet"
    return f"OLFT chose {sweep_entry['olft_chose']}" + (" (matches)" if sweep_entry["olft_matches_best"] else "")


def _noise_text(s: dict) -> str:
    """Why a swept task gives no evidence: every layer tied, or inside and outside within noise."""
    kind = s.get("evidence", "holdout")
    if s.get(f"middle_only_{kind}"):
        return (f"middle third only (best layer {'/'.join(map(str, s[f'best_{kind}_tied']))}{EVIDENCE[kind]}; no layer "
                "outside it was tuned, so this sweep cannot say where the best layer lies)")
    if s.get(f"within_noise_{kind}"):
        return (f"within noise (best layer {'/'.join(map(str, s[f'best_{kind}_tied']))}{EVIDENCE[kind]}, but the best "
                f"inside and outside the middle differ by less than 2 standard errors, {s[f'noise_{kind}']:.1f} points)")
    return "no signal (every layer scores the same)"


EVIDENCE = {"validation": "", "holdout": " by held-out score", "holdout_loss": " by held-out loss, scores all tied"}
EVIDENCE_NAME = {"validation": "by validation", "holdout": "by held-out score", "holdout_loss": "by held-out loss"}


def _verdicts(avg: dict, costs: dict, sweep: dict, num_layers: int | None) -> dict:
    """Each claim against the numbers: confirmed, partly, or not (rules stated beside them)."""
    out = {}
    o, f, a = (avg[s]["mean"] for s in ("olft", "final", "full"))
    spread = "" if avg["olft"]["std"] is None else " (seed std of the averages: " + ", ".join(
        f"{label} {_f(avg[s]['std'])}" for s, label in STRATEGIES) + ")"
    paper8 = set(PAPER_TASKS)
    scope = ("" if set(avg["tasks"]) == paper8 else
             f" over {', '.join(HEADERS.get(c, c) for c in avg['tasks'])} ({len(paper8 & set(avg['tasks']))} of the paper's 8 tasks)")
    if o is not None:
        gain = o - f
        out["claim1"] = {"ours": f"OLFT - final-layer = {gain:+.1f}{scope}{spread}",
                         "verdict": "confirmed" if gain >= 10.5 else "partly" if gain > 0 else "not confirmed",
                         "rule": "confirmed if >= +10.5, partly if > 0"}
        diff = o - a
        out["claim2"] = {"ours": f"OLFT - all-layer = {diff:+.1f}{scope}{spread}",
                         "verdict": "confirmed" if diff >= -1.3 else "partly" if diff >= -5 else "not confirmed",
                         "rule": "confirmed if >= -1.3, partly if >= -5"}
    results = []
    for c, s in sweep.items():
        kind = s.get("evidence", "validation" if s["validation"] else "holdout")
        if s[f"best_{kind}"] is not None:
            results.append((c, s[f"best_{kind}_tied"], s[f"best_{kind}_in_middle"], s))
    if results:
        judged = [inside for _, _, inside, _ in results if inside is not None]
        text = "; ".join(f"{HEADERS.get(c, c)}: " + (_noise_text(s) if inside is None else
                         f"best layer {'/'.join(map(str, tied))}{EVIDENCE[s.get('evidence', 'holdout')]}") + f" (middle {_range(s['middle_bucket'])}), " + _chose(s)
                         for c, tied, inside, s in results)
        few = len(judged) * 2 < len(results)  # most swept tasks carry no evidence either way
        verdict = ("not measured (no sweep separates the layers)" if not judged else
                   "partly (most sweeps cannot separate the layers)" if few and any(judged) else "confirmed" if all(judged)
                   else "partly" if any(judged) else "not confirmed")
        out["claim3"] = {"ours": text, "verdict": verdict,
                         "rule": "best layer of the sweep (full-train validation if run, else held-out train score, else held-out loss where every "
                         "held-out score ties; ties count as one "
                         "best set; sweeps where every layer ties, or where the best inside and outside the middle differ by "
                         "less than two standard errors of the scoring set, binomial for accuracy and F1, (1 - r^2)/sqrt(n - 1) for MCC and Pearson, are left out) in the middle third: all tasks = confirmed, some "
                         "= partly; if fewer than half the swept tasks are judged, at most partly"}
    t, p = costs["olft"]["time_percent"], costs["olft"]["param_percent"]
    if t is not None and p is not None:
        sel = costs["selection"]["olft_plus_selection_percent"]
        ok_t, ok_p = t <= 69, p <= 4
        out["claim4"] = {"ours": f"time {t:.0f} % ({sel:.0f} % with selection), parameters {p:.1f} % (1/{num_layers} layers)",
                         "verdict": "confirmed" if ok_t and ok_p else "partly" if ok_t or ok_p or t < 100 else "not confirmed",
                         "rule": "time <= 69 % and parameters <= 4 %: confirmed; one of them, or time < 100 %: partly"}
    return out


def collect(work: Path, results_dir: Path | None = None) -> dict:
    """Everything the report shows, from bench.json and the run folders under `work` (and, for
    claim 3, the selection benchmark's oracle in `results_dir` for tasks this benchmark did not sweep)."""
    manifest = _load(work / "bench.json")
    if manifest is None:
        raise SystemExit(f"{work}/bench.json not found: run the benchmark first (without --report-only).")
    runs = {n: r for n in manifest["jobs"] if (r := _load(work / n / "results.json")) is not None}
    seeds = [int(s) for s in str(manifest["caps"]["seeds"]).split(",") if s.strip()]
    table = {c: _column(manifest["plans"][c], seeds, runs) for c in manifest["columns"]}
    first = next(iter(runs.values()), {})
    avg, costs = _averages(table), _costs(table, first.get("num_layers"))
    # Main runs whose strategies (and selection, which the whole-run share adds: olft's timing compares
    # it with them) were not timed under one set of conditions (olft's own check: another process,
    # thread count, device, or a resume mid-training), named under Table 2.
    costs["not_comparable"] = {n: r["timing"]["strategies"] for n in manifest["jobs"] if (r := runs.get(n))
                               and "-s" in n and not n.startswith(("lr", "paper-", "sweep")) and r.get("timing")
                               and not r["timing"]["strategies"].get("comparable", True)}
    sweep = _sweep(manifest, runs, table)
    middle = first.get("middle_bucket")
    for task, oracle in oracle_sweeps(results_dir, work.name).items():
        if task not in sweep:
            plan = manifest["plans"].get(task) or {}
            scored = min(plan.get("eval_count") or 1000, 1000)  # the selection benchmark scores at most 1,000
            chosen = sorted(set(v[0] for v in table.get(task, {}).get("strategies", {}).get("olft", {}).get("layers", {}).values()))
            sweep[task] = _oracle_entry(task, oracle, middle, scored, chosen, _metric_of(plan.get("run_task", task), runs))
    paper_avg = _paper_average(table, avg)  # what claims 1 and 2 are judged on
    env = {k: first.get(k) for k in ("versions", "python", "machine", "device")}
    env["git_commits"] = sorted({r.get("git_commit") or "unknown" for r in runs.values()})
    return {
        "benchmark": "olft-paper", "model": manifest["model"], "method": manifest["method"], "command": recorded_command(manifest["command"]),
        "commands": list(dict.fromkeys(map(recorded_command, manifest.get("commands") or [manifest["command"]]))),
        "planned_seeds": {c: [s for s in map(str, seeds) if f"{manifest['plans'][c]['run_task']}-s{s}" in manifest["jobs"]]
                          for c in manifest["columns"]},
        "caps": manifest["caps"], "estimate": manifest["estimate"], "notes": manifest.get("notes", ""),
        "threads": manifest.get("threads"), "cpu": manifest.get("cpu"), "num_layers": first.get("num_layers"),
        "middle_bucket": first.get("middle_bucket"), "max_length": first.get("max_length"),
        "runs_finished": sum(r.get("status") == "complete" for r in runs.values()), "runs_planned": len(manifest["jobs"]),
        "missing": _missing(manifest, runs), "wall_hours": sum(manifest.get("wall_seconds", {}).values()) / 3600,
        "table1": table, "average": avg, "table2": costs, "sweep": sweep, "paper_protocol": _paper_protocol(manifest, runs),
        "paper_average": paper_avg, "claims": _verdicts(paper_avg, costs, sweep, first.get("num_layers")), "environment": env,
        "lr_grid": grid_results(work, manifest["caps"]), "version": 2 if "lr_grid" in manifest["caps"] else 1,
    }  # fmt: skip


# ------------------------------------------------------------------------------ rendering

def _f(value: float | None, digits: int = 1) -> str:
    """A number for a table cell; '-' when there is none."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _cell(stats: dict, planned: int, layers: dict | None = None) -> str:
    """A Table 1 cell: mean ± std, the chosen layers, and * when seeds are missing."""
    if not stats["n"]:
        return "failed" if stats.get("failed") else "–"
    text = _f(stats["mean"]) + (f" ± {_f(stats['std'])}" if stats["std"] is not None else "")
    if layers:
        text += " l-" + "/".join(str(layers[s][0]) for s in sorted(layers, key=int))
    return text + ("*" if stats["n"] < planned else "")


def _table1(d: dict) -> list[str]:
    """Table 1 (scores per task and average) with its legend and data notes."""
    seeds = [s for s in str(d["caps"]["seeds"]).split(",") if s.strip()]
    cols = list(d["table1"])
    heads = [HEADERS.get(c, c) + ("†" if d["table1"][c]["derived"] else "") for c in cols]
    lines = ["| | " + " | ".join(heads) + " | Avg |", "|---" * (len(cols) + 2) + "|"]
    for name, label in STRATEGIES:
        row = [_cell(d["table1"][c]["strategies"][name], len(seeds), d["table1"][c]["strategies"][name]["layers"] if name == "olft" else None)
               for c in cols]
        a = d["average"][name]
        avg = _f(a["mean"]) + (f" ± {_f(a['std'])}" if a["std"] is not None else "")
        lines.append(f"| {label} | " + " | ".join(row) + f" | {avg} |")
    n_avg = len(d["average"]["tasks"])
    lines += ["", f"Scores x100, mean ± sample standard deviation over {len(seeds)} seed(s) ({', '.join(seeds)}); "
              "F1 for MRPC and QQP, accuracy otherwise (the paper's metrics). `l-i`: the layer OLFT chose (0-based, one per seed), "
              f"among the middle third (layers {_range(d['middle_bucket'])}). `*`: fewer seeds than planned; `–`: not run yet. "
              f"Avg over {n_avg} of {len(cols)} tasks" + (f" ({', '.join(HEADERS.get(c, c) for c in d['average']['tasks'])})." if n_avg < len(cols) else ".")]
    for c in cols:
        if d["table1"][c]["derived"]:
            lines.append(f"- † {HEADERS.get(c, c)}: {d['table1'][c]['note']}.")
    return lines


def _range(layers: list[int] | None) -> str:
    """A layer list as first-last."""
    return "?" if not layers else f"{layers[0]}-{layers[-1]}"


def _table2(d: dict) -> list[str]:
    """Table 2 (time, parameters, average score) and the selection time."""
    t = d["table2"]
    lines = ["| | train time (min) | time % | PEFT params (M) | param % | avg score |", "|---|---|---|---|---|---|"]
    for name, label in (("full", "all-layer"), ("olft", "single-layer (OLFT)"), ("final", "final-layer")):
        r = t[name]
        params = None if r["peft_params"] is None else r["peft_params"] / 1e6
        lines.append(f"| {label} | {_f(r['minutes_per_run'], 2)} | {_f(r['time_percent'])} | {_f(params, 4)} | "
                     f"{_f(r['param_percent'], 2)} | {_f(d['average'][name]['mean'])} |")
    per_task = t["olft_time_percent_per_task"]
    s = t["selection"]
    basis = ("CPU seconds of the run's process (one torch thread, so they count the work, not what else the machine ran)"
             if t.get("basis") == "cpu" else "wall seconds")
    load = t.get("load_average_15min")
    whole = t.get("whole_run_vs_all_layer_per_task") or {}
    share = t.get("stack_share_percent_per_task") or {}
    partial = t.get("partial_time") or []
    left_out = (f" (left out: {', '.join(partial)}, resumed from a checkpoint, so {'its' if len(partial) == 1 else 'their'} "
                "recorded time counts only the steps after it)") if partial else ""
    lines += ["", f"Train time: mean per (task, seed) run over the {t['runs']} runs where all three strategies finished "
              f"with whole timings{left_out}, in {basis}, "
              "as olft records it (its training loop plus building the activation cache of its training split; evaluation excluded); time % and param % relative to all-layer. "
              + (f"OLFT time % per task: {', '.join(f'{HEADERS.get(c, c)} {v:.0f}' for c, v in per_task.items())}. " if per_task else "")
              + ("CPU seconds are not used: some runs were made by an olft whose CPU time also counted building the evaluation "
                 "caches, so the two would not compare. " if t.get("cpu_scopes_differ") else "")
              + ("These runs' CPU seconds also count building the activation caches of the scored splits (olft before its "
                 "`cpu_scope` stamp), which all-layer tuning never builds: OLFT's and final-layer's time % are overstated most "
                 "where the scored split is large (QQP, MNLI, QNLI: up to 5,000 examples through the layers below the cache). "
                 if t.get("basis") == "cpu" and not t.get("cpu_scope") else "")
              + (f"Whole OLFT run (selection + tuning) as % of all-layer tuning, per task: {', '.join(f'{HEADERS.get(c, c)} {v:.0f}' for c, v in whole.items())}"
                 + (" (selection in wall seconds: not every run recorded its CPU time). " if t.get("basis") == "cpu" and t.get("selection_basis") != "cpu" else ". ")
                 if whole else "")
              + (f"Share of the stack OLFT's chosen layer leaves in each training step ((L - k) / L: layers below k run once, into the cache), "
                 f"per task: {', '.join(f'{HEADERS.get(c, c)} {v:.0f}' for c, v in share.items())}; OLFT's time % sits near or above this "
                 "share (per-step work that does not shrink with the layers, such as the optimizer step and batching, weighs more on "
                 "short inputs), so a lower chosen layer costs more whatever the selector. " if share else "")
              + (f"Machine load (15-minute average when each strategy finished): {load[0]:.1f}-{load[1]:.1f}. " if load else "")
              + ("Timed under different conditions (olft's check): " + "; ".join(
                  f"{n}: differs in {', '.join(tm['differs_in'] or ['-'])}"
                  + (f", resumed mid-training: {', '.join(tm['resumed_mid_training'])}" if tm.get("resumed_mid_training") else "")
                  for n, tm in t.get("not_comparable", {}).items()) + "." if t.get("not_comparable") else
                 "Every run's strategies were timed by one process under the same conditions."),
              "", f"**Selection time** (left out of the paper's Table 2): {_f(s['minutes_per_run'], 2)} min per run on average; "
              f"OLFT with its selection takes {_f(s['olft_plus_selection_percent'])} % of all-layer training time."]
    return lines


def _layers(s: dict, kind: str) -> str:
    """The tied best layers of one sweep kind, or why there are none."""
    tied = s.get(f"best_{kind}_tied") or ([] if s[f"best_{kind}"] is None else [s[f"best_{kind}"]])
    if not tied:
        return "-"
    return "all tie" if len(tied) > 1 and len(tied) == len(s[kind]) else "/".join(map(str, tied))


def _sweep_md(d: dict) -> list[str]:
    """The layer sweep: score per layer and where the best layer falls."""
    sw = d["sweep"]
    if not sw:
        return ["No layer sweep was run."]
    cols = list(sw)
    kinds = [("holdout", "h"), *([("holdout_loss", "loss")] if any(sw[c].get("holdout_loss") for c in cols) else []),
             ("validation", "v")]
    lines = ["Per layer: `h` = score x100 of the candidate trained on the selection subset of train and scored on held-out "
             "train examples (`--candidates all`); " + ("`loss` = that candidate's held-out loss (lower is better); "
             if len(kinds) == 3 else "") + "`v` = score x100 of the layer tuned on the full capped train set, scored on validation.", "",
             "| layer | " + " | ".join(f"{HEADERS.get(c, c)} {tag}" for c in cols for _, tag in kinds) + " |",
             "|---" * (len(kinds) * len(cols) + 1) + "|"]
    n = d.get("num_layers") or 0
    for layer in range(n):
        mark = " (middle)" if d["middle_bucket"] and layer in d["middle_bucket"] else ""
        cells = []
        for c in cols:
            for kind, _ in kinds:
                values = sw[c].get(kind) or {}
                value = values.get(str(layer), values.get(layer))
                cells.append(_f(value, 3) if kind == "holdout_loss" else _f(value))
        lines.append(f"| {layer}{mark} | " + " | ".join(cells) + " |")
    lines.append("")
    for c in cols:
        s = sw[c]
        by_loss = (f"by held-out loss {_layers(s, 'holdout_loss')} (in middle: {s['best_holdout_loss_in_middle']}), "
                   if s.get("holdout_loss") else "")
        lines.append(f"- {HEADERS.get(c, c)}: best layer(s) by held-out train {_layers(s, 'holdout')} (in middle: {s['best_holdout_in_middle']}), "
                     f"{by_loss}by validation {_layers(s, 'validation')} (in middle: {s['best_validation_in_middle']}); best inside the middle "
                     f"bucket {s['best_holdout_in_middle_bucket']} (h) / {s['best_validation_in_middle_bucket']} (v); OLFT's middle-bucket "
                     f"choice in the main runs: {s['olft_chose'] or '-'} (matches the sweep's best: {s['olft_matches_best']}; "
                     f"judged {EVIDENCE_NAME[s.get('evidence', 'holdout')]})" + (f"; `v` from the {s['source']} (its own budget: "
                     "see docs/selection.md; not the main runs' train set or learning rate)." if s.get("source") else "."))
    return lines


def _grid_md(d: dict) -> list[str]:
    """The learning-rate grid: held-out train score per strategy and rate, and the rate chosen."""
    g = d.get("lr_grid")
    if not g:
        return [f"No grid: every strategy trained at lr {d['caps']['lr']:g}."]
    tasks = g["tasks"]
    lines = [f"Each strategy trained at each rate on {g['train_samples']} train examples of {', '.join(HEADERS.get(t, t) for t in tasks)} "
             f"(seed {g['seed']}, the main runs' epochs and batch) and was scored on {g['holdout_samples']} other train examples "
             "(never on validation); it then trains at the rate with the best mean held-out score (ties: the lower rate).", "",
             "| strategy | " + " | ".join(f"lr {lr:g}" for lr in g["values"]) + " | chosen |", "|---" * (len(g["values"]) + 2) + "|"]
    for name, label in STRATEGIES:
        by_lr = g["scores"].get(name, {})
        cells = []
        for lr in g["values"]:
            per = by_lr.get(f"{lr:g}", {})
            mean = g["means"].get(name, {}).get(f"{lr:g}")
            cells.append("-" if not per else f"{_f(mean)} (" + ", ".join(f"{HEADERS.get(t, t)} {_f(per.get(t))}" for t in tasks) + ")")
        chosen = (g.get("chosen") or {}).get(name)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'-' if chosen is None else f'{chosen:g}'} |")
    if g.get("missing"):
        lines += ["", f"Grid unfinished: {', '.join(g['missing'])}."]
    return lines


def _protocol_md(d: dict) -> list[str]:
    """The leakage-free selection beside the paper's protocol."""
    p = d["paper_protocol"]
    if not p:
        return ["Not run."]
    lines = [f"{HEADERS.get(p['task'], p['task'])}, same seeds, OLFT only:", "", "| selection protocol | chosen layer per seed | OLFT score |", "|---|---|---|"]
    for kind, label in (("train-holdout", "leakage-free default (held-out train)"), ("validation", "paper's (`--selection-data validation`)")):
        r = p[kind]
        layers = ", ".join(f"s{s}: {v}" for s, v in sorted(r["layers"].items())) or "-"
        lines.append(f"| {label} | {layers} | {_f(r['mean'])}{' ± ' + _f(r['std']) if r['std'] is not None else ''} |")
    return lines


def _chosen(d: dict) -> str:
    """The grid's choice as 'OLFT 1e-3, final-layer 3e-3, ...' (or 'pending')."""
    chosen = (d.get("lr_grid") or {}).get("chosen")
    if not chosen:
        return "pending: the grid is unfinished"
    return ", ".join(f"{label} {chosen[n]:g}" for n, label in STRATEGIES if n in chosen)


def full_plan_gap(d: dict) -> str | None:
    """What the model's full plan (its profile's seeds, every table column) has that this command
    left out, or None; a command run on a subset reports complete for itself but partial for the model."""
    try:
        import paper  # the benchmark module: its profiles define the full plan
    except ImportError:
        return None
    profile = paper.PROFILES.get(d["model"])
    if profile is None:
        return None
    seeds = [s for s in str(profile.caps.seeds).split(",") if s.strip()]
    done_seeds = [s for s in str(d["caps"]["seeds"]).split(",") if s.strip()]
    planned = d.get("planned_seeds") or {c: done_seeds for c in d["table1"]}  # reports before commands added up
    columns = [c for c, _ in paper.COLUMNS + paper.EXTRA_COLUMNS]
    missing_cols = [HEADERS.get(c, c) for c in columns if c not in d["table1"]]
    lacking = {c: [s for s in seeds if s not in planned.get(c, [])] for c in columns if c in d["table1"]}
    lacking = {c: v for c, v in lacking.items() if v}
    if not missing_cols and not lacking:
        return None
    common = sorted(set.intersection(*map(set, lacking.values()))) if lacking else []
    if lacking and all(v == common for v in lacking.values()) and len(lacking) == len([c for c in columns if c in d["table1"]]):
        seed_text = f"seeds {', '.join(common)}"
    else:
        seed_text = "; ".join(f"{HEADERS.get(c, c)} seeds {', '.join(v)}" for c, v in lacking.items())
    return ("the model's full plan also has " + ", ".join(filter(None, [
        f"tasks {', '.join(missing_cols)}" if missing_cols else "", seed_text if lacking else ""])))


def _commands(d: dict) -> list[str]:
    """The commands whose runs the report covers (one, or several at the same budget on one work dir)."""
    return d.get("commands") or [d["command"]]


def render_md(d: dict) -> str:
    """The model's Markdown report from the collected dict."""
    caps, env = d["caps"], d["environment"]
    status = "complete" if not d["missing"] else f"**PARTIAL**: {d['runs_finished']} of {d['runs_planned']} runs finished"
    gap = full_plan_gap(d)
    if gap:
        status += f" for {'this command' if len(_commands(d)) == 1 else 'these commands'}; **PARTIAL** for the model: {gap}"
    lines = [f"# OLFT paper benchmark: {d['model']}, {d['method']}", "", f"Status: {status}.", ""]
    if d["missing"]:
        lines += ["Missing or unfinished:", *[f"- {m}" for m in d["missing"]], ""]
    lines += ["```", *_commands(d), "```", "",
              f"Caps: at most {caps['max_train_samples']} training examples per task and seed (seeded sample), {caps['max_eval_samples']} "
              f"scored examples, {caps['max_length']} tokens, {caps['epochs']:g} epoch(s), batch {caps['batch_size']}, "
              + (f"per-task train caps {caps['task_train_caps']}, " if caps.get("task_train_caps") else "")
              + (f"learning rate per strategy from the grid below ({_chosen(d)}). " if d.get("lr_grid") else f"lr {caps['lr']:g}. ")
              + (f"Selection: `--selector {caps.get('selector', 'exhaustive')}` over the middle third, fitted on {caps['selection_train_samples']} "
                 f"train examples and scored on {caps['selection_eval_samples']} other train examples (leakage-free default)"
                 + (f"; trained candidates get {caps['selection_epochs']:g} epoch(s)." if caps.get("selector", "exhaustive") != "probe" else "; the probe trains no candidate.")),
              "", f"Why these caps: {d['notes'] or '-'}.", "",
              f"Timing: estimated before the {'run' if len(_commands(d)) == 1 else 'last command'} {d['estimate']}. Measured wall time of the runs: {d['wall_hours']:.2f} h.", "",
              "## Learning rates", "", *_grid_md(d), "",
              "## Table 1: scores", "", *_table1(d), "", "## Table 2: cost", "", *_table2(d), "",
              "## Where is the best layer? (layer sweep)", "", *_sweep_md(d), "",
              "## Selection protocol: leakage-free default vs. the paper's", "", *_protocol_md(d), "",
              "## Claims", "", *[f"- {PAPER[k]}: {v['ours']} -> **{v['verdict']}** ({v['rule']})" for k, v in d["claims"].items()], "",
              "## Environment", "", f"- machine: {d['cpu']}; {env['machine']} ({env['device']}); Python {env['python']}",
              f"- versions: {', '.join(f'{k} {v}' for k, v in (env['versions'] or {}).items())}",
              f"- olft git commit(s) of the runs: {', '.join(env['git_commits'])}", ""]
    return "\n".join(lines)


def _panel(ax, d: dict, col: str) -> None:
    """One task's plot: per-layer scores, final/all-layer lines, OLFT's pick per seed."""
    cell, sw = d["table1"].get(col), d["sweep"].get(col, {})
    if d["middle_bucket"]:
        ax.axvspan(d["middle_bucket"][0] - 0.5, d["middle_bucket"][-1] + 0.5, color="0.92")
    holdout = sw.get("holdout") or (cell or {}).get("candidates", {})
    for scores, style, label in ((holdout, "o-", "candidates: held-out train"), (sw.get("validation", {}), "s-", "full train, validation")):
        pts = sorted((int(k), v) for k, v in scores.items())
        if pts:
            ax.plot(*zip(*pts, strict=True), style, ms=3, label=label)
    for name, ls in (("final", "--"), ("full", ":")):
        if cell and cell["strategies"][name]["mean"] is not None:
            ax.axhline(cell["strategies"][name]["mean"], ls=ls, color="k" if name == "full" else "0.5", label=f"{name} (validation)")
    olft = (cell or {}).get("strategies", {}).get("olft", {"per_seed": {}})
    pts = [(olft["layers"][s][0], v) for s, v in olft["per_seed"].items()]
    if pts:
        ax.plot(*zip(*pts, strict=True), "r*", ms=10, label="OLFT (validation)")
    ax.set_title(HEADERS.get(col, col), fontsize=9)
    ax.set_xlim(-0.5, (d["num_layers"] or 1) - 0.5)
    ax.tick_params(labelsize=7)


def plot(d: dict, path: Path) -> None:
    """Score x100 per layer for every task (table columns and sweep tasks), one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = list(dict.fromkeys([*d["table1"], *d["sweep"]]))
    ncols = min(4, len(cols))
    nrows = math.ceil(len(cols) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(8.0, 3.6 * ncols), 1.0 + 2.8 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, cols, strict=False):
        _panel(ax, d, col)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    handles = {lab: h for ax in axes.flat for h, lab in zip(*ax.get_legend_handles_labels(), strict=True)}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=3, fontsize=7)
    fig.suptitle(f"{d['model']} / {d['method']}: score x100 per layer (shaded: middle third)", fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def readme(results_dir: Path) -> str:
    """docs/results/README.md: every model's verdict on each of the paper's claims."""
    lines = ["# Does OLFT reproduce here?", "",
             "Generated by `benchmarks/paper.py` from the run folders (rerun it with `--report-only` to refresh). "
             "The paper compares one tuned middle layer (OLFT) with the same PEFT module on the final layer and on all "
             "layers; each section below tests its four claims on one real pretrained model of this machine, "
             "with the caps stated in that model's report.", ""]
    reports = [(path, d) for path in sorted(results_dir.glob("*.json")) if (d := _load(path)) and d.get("benchmark") == "olft-paper"]
    reports.sort(key=lambda pd: -pd[1].get("version", 1))  # the current tool's tables first
    if any(d.get("version", 1) < 2 for _, d in reports):
        lines += ["> **Stale** (marked below): tables made with an older olft at toy budgets (700 / 300 training examples, "
                  "2 epochs, one learning rate): encoders without segment ids and with [CLS] instead of their checkpoint's "
                  "mean pooling, decoder pairs cut at the end rather than longest-first, exhaustive selection. They are kept "
                  "as a record until `benchmarks/paper.py` regenerates them on the current tool.", ""]
    if reports:
        lines += ["At a glance (each cell: verdict, and the number it rests on; details per model below):", "",
                  "| model, method | runs | 1: OLFT vs final-layer | 2: OLFT vs all-layer | 3: best layer in the middle | 4: cost |",
                  "|---|---|---|---|---|---|"]
        for _path, d in reports:
            c = d["claims"]
            cells = [f"{c[k]['verdict']} ({_glance(k, d)})" if k in c else "not measured yet" for k in PAPER]
            stale = " (stale)" if d.get("version", 1) < 2 else ""
            lines.append(f"| {d['model']}, {d['method']}{stale} | {d['runs_finished']}/{d['runs_planned']} | " + " | ".join(cells) + " |")
        lines.append("")
    for path, d in reports:
        status = "complete" if not d["missing"] else f"PARTIAL ({d['runs_finished']} of {d['runs_planned']} runs)"
        if d.get("version", 1) >= 2 and full_plan_gap(d):
            status = f"PARTIAL: {full_plan_gap(d)}"
        if d.get("version", 1) < 2:
            status += "; STALE: made before the input, selection and budget fixes (see the top of this page)"
        caps = d["caps"]
        lines += [f"## {d['model']}, {d['method']} ({status}; details: [{path.stem}.md]({path.stem}.md))", "",
                  " + ".join(f"`{c}`" for c in _commands(d)) + f": seeds {caps['seeds']}, at most {caps['max_train_samples']} training examples per task, "
                  f"{caps['epochs']:g} epoch(s), " + (f"learning rate per strategy from a grid on held-out train data ({_chosen(d)})"
                  if d.get("lr_grid") else f"lr {caps['lr']:g}") + f"; tasks without a train split train on {caps['dev_train_fraction']:.0%} of their dev split.", "",
                  "| claim (paper) | here | verdict |", "|---|---|---|"]
        for key, text in PAPER.items():
            v = d["claims"].get(key)
            lines.append(f"| {text} | {v['ours'] if v else 'not measured yet'} | {v['verdict'] if v else '-'} |")
        lines += ["", "Rules: " + "; ".join(f"claim {k[-1]}: {v['rule']}" for k, v in d["claims"].items()), ""]
    for path in sorted(results_dir.glob("selection-budget-*.json")):
        lines += _selection_budget_summary(path)
    return "\n".join(lines)


def _glance(key: str, d: dict) -> str:
    """The number a claim's verdict rests on, from the report's data, for the overview table."""
    avg, olft = d.get("paper_average") or d["average"], d["table2"]["olft"]  # the average the verdicts use
    if key in ("claim1", "claim2"):
        return f"{avg['olft']['mean'] - avg['final' if key == 'claim1' else 'full']['mean']:+.1f}"
    if key == "claim4":
        return (f"time {olft['time_percent']:.0f} % ({d['table2']['selection']['olft_plus_selection_percent']:.0f} % with "
                f"selection), parameters {olft['param_percent']:.1f} %")
    inside = [s[f"best_{s.get('evidence', 'holdout')}_in_middle"] for s in d["sweep"].values()]
    judged = [v for v in inside if v is not None]
    return (f"middle in {sum(judged)} of {len(judged)} swept tasks"
            + (f"; {len(inside) - len(judged)} without signal" if len(judged) < len(inside) else ""))


def summary_md(d: dict) -> str:
    """The short table the project README quotes for one model and method: per column the mean
    score x100 (± sample std over seeds when more than one), the average over the paper's eight
    tasks (what claims 1 and 2 are judged on), and each strategy's training time as % of
    all-layer tuning (Table 2's basis; OLFT also with its selection). From the report's dict only:
    `python benchmarks/paper_report.py docs/results/<model>-<method>.json` prints it."""
    cols, avg, t2 = list(d["table1"]), d.get("paper_average") or d["average"], d["table2"]
    lines = ["| | " + " | ".join(HEADERS.get(c, c) for c in cols) + f" | avg ({len(avg['tasks'])} tasks) | time % of all-layer |",
             "|---" * (len(cols) + 3) + "|"]
    for name, label in STRATEGIES:
        cells = [_cell(d["table1"][c]["strategies"][name], 0) for c in cols]  # Table 1's cell, without layers or '*'
        time = _f(t2[name].get("time_percent"), 0)
        if name == "olft" and t2.get("selection", {}).get("olft_plus_selection_percent") is not None:
            time += f" ({_f(t2['selection']['olft_plus_selection_percent'], 0)} with selection)"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_f(avg[name]['mean'])} | {time} |")
    seeds = sorted({s for c in cols for st in d["table1"][c]["strategies"].values() for s in st["per_seed"]}, key=int)
    lines += ["", f"{d['runs_finished']} of {d['runs_planned']} runs; seeds {', '.join(seeds)}; "
              f"average over {', '.join(HEADERS.get(c, c) for c in avg['tasks'])}; time on the {t2.get('basis', 'wall')} basis."]
    return "\n".join(lines)


def _selection_budget_summary(path: Path) -> list[str]:
    """The selection-budget study in brief: regret of each budget and ranking, per task."""
    d = _load(path)
    if not d or d.get("benchmark") != "olft-selection-budget":
        return []
    lines = [f"## Does selection find the best layer? {d['model']}, {d['method']} (details: [{path.stem}.md]({path.stem}.md))", "",
             f"`{d['command']}`. Regret = validation points (x100) lost against the full-train sweep's best layer, mean over "
             "seeds (0 = the best layer picked); `middle`: OLFT's choice among the middle third; `all`: among every layer.", "",
             "| task | budget | ranking | regret middle | regret all | Spearman | flat |", "|---|---|---|---|---|---|---|"]
    for task, name, rank, r, s in selection_budget_rows(d):
        lines.append(f"| {HEADERS.get(task, task)} | {name} | {rank} | {_f(r['regret_middle'])} | {_f(r['regret_all'])} | "
                     f"{_f(r['spearman'], 2)} | {s['flat']}/{s['runs']} |")
    return [*lines, ""]


def selection_budget_rows(d: dict, tasks: list[str] | None = None):
    """(task, budget, ranking, that ranking's summary, the budget's summary) of a selection-budget report."""
    for task, e in d["tasks"].items():
        if tasks is not None and task not in tasks:
            continue
        for name, b in e["budgets"].items():
            for rank in ("score", "loss"):
                yield task, name, rank, b["summary"][rank], b["summary"]


def write_reports(work: Path, results_dir: Path) -> Path:
    """Write <model>-<method>.json/.md/.png and README.md; returns the .md path."""
    d = collect(work, results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / work.name
    atomic_write(stem.with_suffix(".json"), json.dumps(d, indent=1) + "\n")
    atomic_write(stem.with_suffix(".md"), render_md(d))
    plot(d, stem.with_suffix(".png"))
    atomic_write(results_dir / "README.md", readme(results_dir))
    return stem.with_suffix(".md")


if __name__ == "__main__":  # print the README's short table from a report's JSON
    from cmdline import print_summary

    print_summary(summary_md, "Print the README's short table (seed means of OLFT, final-layer and all-layer tuning, and their time) from a paper report's JSON.",
                  "docs/results/<model>-<method>.json")
