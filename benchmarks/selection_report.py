"""Tables, JSON and a cost-vs-regret plot from benchmarks/selection.py's work dir.

A unit is one (task, seed) folder whose oracle covers every candidate; a selector's result in it
counts once both exist. Everything is recomputed from the work dir's JSON files alone.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

REGRET_TARGET = 0.5  # points: the issue's bar for a good pick
COST_TARGET = 0.30  # of exhaustive's seconds


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def unit_rows(folder: Path) -> list[dict]:
    """One row per selector result in a (task, seed) folder whose oracle is complete."""
    oracle = {d["layer"]: 100 * d["score"] for p in folder.glob("oracle-*.json") if (d := _load(p))}
    selections = {p.stem[len("select-"):]: d for p in folder.glob("select-*.json") if (d := _load(p))}
    if not selections:
        return []
    layers = sorted({c["layer"] for s in selections.values() for c in s["candidates"]})
    if not layers or any(layer not in oracle for layer in layers):
        return []
    best = max(oracle[layer] for layer in layers)
    top3 = sorted(layers, key=lambda k: (-oracle[k], k))[:3]
    # Cost in CPU seconds where every selector of the unit recorded them: with one torch thread
    # they count the work whatever else ran on the machine (wall seconds grow with its load);
    # pieces from before olft recorded them fall back to wall seconds, for the whole unit.
    basis = "cpu_seconds" if all(s.get("cpu_seconds") is not None for s in selections.values()) else "seconds"
    exhaustive = selections.get("exhaustive", {}).get(basis)
    rows = []
    for name, sel in sorted(selections.items()):
        pick = sel["selected_layer"]
        first = sel["rounds"][0]["ranking"] if sel.get("rounds") else sel["ranking"]
        position = {layer: -i for i, layer in enumerate(first)}  # higher = ranked better
        rho = _spearman([position[k] for k in layers], [oracle[k] for k in layers]) if len(first) == len(layers) else None
        rows.append({
            "unit": folder.name, "setup": name, "pick": pick, "oracle_best": best,
            "oracle_pick": oracle[pick], "regret": best - oracle[pick], "top1": oracle[pick] == best,
            "top3": pick in top3, "spearman": rho, "flat": bool(sel.get("flat")), "seconds": sel[basis],
            "seconds_basis": "cpu" if basis == "cpu_seconds" else "wall",
            "cost": sel[basis] / exhaustive if exhaustive else None, "confidence": sel.get("confidence"),
            "equivalent": sel.get("equivalent"), "oracle": {str(k): oracle[k] for k in layers},
            "steps": max((r.get("steps") or 0 for r in sel.get("rounds", []) if r.get("stage") == "train"), default=None),
            "oracle_flat": best - min(oracle[k] for k in layers) <= REGRET_TARGET,
        })  # fmt: skip
    return rows


def cross_seed(rows: list[dict], oracle_seconds: dict[str, float]) -> list[dict]:
    """Measures of the oracle's own noise, added to `rows`:

    - each row gets `regret_seed_mean`: regret against the oracle averaged over every seed of its
      task that has one (less noisy than one seed's oracle; the pick is the same);
    - a pseudo-selector `oracle-other-seed` per unit: the best layer of another seed's oracle
      (each other seed in turn, regrets averaged). It costs a whole oracle, and its regret is
      what seed noise alone costs: a selector cannot be expected to beat it by much.
    """
    by_task: dict[str, dict[str, dict]] = {}
    for r in rows:
        task, seed = r["unit"].rsplit("-s", 1)
        by_task.setdefault(task, {})[seed] = r["oracle"]
    means = {}
    for task, seeds in by_task.items():
        layers = set.intersection(*(set(o) for o in seeds.values()))
        means[task] = {k: statistics.fmean(o[k] for o in seeds.values()) for k in layers}
    out = []
    for r in rows:
        task, seed = r["unit"].rsplit("-s", 1)
        m = means[task]
        out.append({**r, "regret_seed_mean": max(m.values()) - m[str(r["pick"])] if str(r["pick"]) in m else None,
                    "oracle_seeds": len(by_task[task])})
    exhaustive = {r["unit"]: r["seconds"] / r["cost"] for r in rows if r.get("cost")}
    for task, seeds in by_task.items():
        for seed, oracle in seeds.items():
            others = [o for s, o in seeds.items() if s != seed]
            if not others:
                continue
            unit = f"{task}-s{seed}"
            best = max(oracle.values())
            picks = [max(o, key=lambda k: (o[k], -int(k))) for o in others]
            regrets = [best - oracle[p] for p in picks]
            template = next(r for r in rows if r["unit"] == unit)
            seconds = oracle_seconds.get(unit)
            out.append({**template, "setup": "oracle-other-seed", "pick": int(picks[0]), "regret": statistics.fmean(regrets),
                        "top1": statistics.fmean(g == 0 for g in regrets), "top3": None, "spearman": None, "flat": False,
                        "seconds": seconds, "cost": seconds / exhaustive[unit] if seconds and unit in exhaustive else None,
                        "confidence": None, "equivalent": None, "regret_seed_mean": None, "oracle_seeds": len(seeds),
                        "steps": None})
    return out


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Setup -> aggregate numbers over its units."""
    out: dict[str, dict] = {}
    for name in sorted({r["setup"] for r in rows}):
        mine = [r for r in rows if r["setup"] == name]
        rhos = [r["spearman"] for r in mine if r["spearman"] is not None]
        costs = [r["cost"] for r in mine if r["cost"] is not None]
        top3 = [r["top3"] for r in mine if r["top3"] is not None]
        seed_mean = [r["regret_seed_mean"] for r in mine if r.get("regret_seed_mean") is not None]
        seconds = [r["seconds"] for r in mine if r["seconds"] is not None]
        out[name] = {
            "units": len(mine),
            "top1": statistics.mean(r["top1"] for r in mine),
            "top3": statistics.mean(top3) if top3 else None,
            "regret_mean": statistics.mean(r["regret"] for r in mine),
            "regret_max": max(r["regret"] for r in mine),
            "within_target": statistics.mean(r["regret"] <= REGRET_TARGET for r in mine),
            "regret_seed_mean": statistics.mean(seed_mean) if seed_mean else None,
            "spearman": statistics.mean(rhos) if rhos else None,
            "flat": statistics.mean(r["flat"] for r in mine),
            "seconds": statistics.mean(seconds) if seconds else None,
            "steps": sorted({r["steps"] for r in mine if r.get("steps")}) or None,
            "cost": statistics.mean(costs) if costs else None,
        }
    return out


def _f(value, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def table(summary: dict[str, dict]) -> list[str]:
    lines = ["| selector | units | top-1 | top-3 | regret mean (pts) | regret max | regret <= 0.5 | regret vs seed-mean oracle | "
             "Spearman | flat | seconds | cost vs exhaustive | steps per trained candidate |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['units']} | {s['top1']:.0%} | {_f(s['top3'], '.0%')} | {s['regret_mean']:.2f} | "
            f"{s['regret_max']:.2f} | {s['within_target']:.0%} | {_f(s.get('regret_seed_mean'))} | {_f(s['spearman'])} | "
            f"{s['flat']:.0%} | {_f(s['seconds'], '.0f')} | {_f(s['cost'])} | "
            f"{'/'.join(map(str, s.get('steps') or [])) or '-'} |"
        )
    return lines


def plot(summary: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (name, s) in enumerate(summary.items()):
        if s["cost"] is None:
            continue
        ax.scatter(s["cost"], s["regret_mean"])
        offset = (4, 4 if i % 2 == 0 else -10)  # alternate above/below: equal regrets do not overprint
        ax.annotate(name, (s["cost"], s["regret_mean"]), textcoords="offset points", xytext=offset, fontsize=8)
    ax.axhline(REGRET_TARGET, ls=":", c="grey")
    ax.axvline(COST_TARGET, ls=":", c="grey")
    ax.set_xlabel("cost (fraction of exhaustive's seconds)")
    ax.set_ylabel("mean regret (validation points)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _basis_note(rows: list[dict]) -> str:
    """Which seconds the table's cost counts (see `unit_rows`)."""
    cpu = sorted({r["unit"] for r in rows if r.get("seconds_basis") == "cpu"})
    wall = sorted({r["unit"] for r in rows if r.get("seconds_basis", "wall") == "wall" and r["setup"] != "oracle-other-seed"})
    note = "Seconds and cost: CPU seconds of the selector's process (one torch thread)" if not wall else (
        "Seconds and cost: wall seconds" if not cpu else
        f"Seconds and cost: CPU seconds on {', '.join(cpu)}; wall seconds on {', '.join(wall)} (recorded before olft kept CPU time)")
    return note + "; oracle-other-seed's cost is the oracle's wall seconds against exhaustive's."


def write_report(work: Path, results_dir: Path, model: str, method: str, command: str, planned: int | None = None) -> bool:
    """docs/results/selection-<model>.{md,json,png} from the work dir (partial when units are missing).
    False, writing nothing, when the work dir has no finished unit yet."""
    from olft.report import atomic_write, write_json

    folders = sorted(p for p in work.glob("*-s*") if p.is_dir())
    rows = [r for folder in folders for r in unit_rows(folder)]
    if not rows:
        return False
    pieces = {f.name: [d for p in f.glob("oracle-*.json") if (d := _load(p))] for f in folders}
    oracle_seconds = {k: sum(d["seconds"] for d in v) for k, v in pieces.items() if v and all("seconds" in d for d in v)}
    rows = cross_seed(rows, oracle_seconds)
    units = sorted({r["unit"] for r in rows})
    partial = planned is None or len(units) < planned
    # Where every layer ends within the target of the best, any pick meets it: such units say
    # nothing about a selector and are left out of the summary (listed below it).
    flat_units = sorted({r["unit"] for r in rows if r["oracle_flat"]})
    summary = summarise([r for r in rows if not r["oracle_flat"]] or rows)
    n_setups = len({r["setup"] for r in rows})
    # Selectors that ran on fewer units are compared like for like on the units every one ran.
    common = [u for u in units if len({r["setup"] for r in rows if r["unit"] == u}) == n_setups]
    common_rows = [r for r in rows if r["unit"] in common and not r["oracle_flat"]]
    summary_common = summarise(common_rows) if common_rows and len(common) < len(units) else None
    tag = f"selection-{model}-{method}"
    results_dir.mkdir(parents=True, exist_ok=True)
    write_json(results_dir / f"{tag}.json", {"command": command, "partial": partial, "units": units,
                                             "planned_units": planned, "oracle_flat_units": flat_units,
                                             "summary": summary, "common_units": common,
                                             "summary_common_units": summary_common, "rows": rows})  # fmt: skip
    informative = len(units) - len(flat_units)
    plot(summary, results_dir / f"{tag}.png", f"{model} {method}: {informative} (task, seed) unit(s) where the oracle "
         f"is not flat")
    lines = [f"# Layer selectors against the oracle: {model}, {method}" + (" (PARTIAL)" if partial else ""), "",
             "```", command, "```", "",
             f"Units with results: {len(units)}" + (f" of {planned}" if planned else "") + f" ({', '.join(units)}); with "
             f"every selector: {len(common)}.", "",
             *table(summary), "",
             *([f"The same on the {len(common)} units every selector ran ({', '.join(common)}), like for like:", "",
                *table(summary_common), ""] if summary_common else []),
             _basis_note(rows), "",
             f"Left out of the table: units where the oracle is flat (every layer within {REGRET_TARGET} points of the "
             f"best): {', '.join(flat_units) or 'none'}.", "", f"![cost vs regret]({tag}.png)", "", "## Per unit", "",
             "| unit | oracle (validation x100 per layer) | " + " | ".join(summary) + " |",
             "|---|---|" + "---|" * len(summary)]  # fmt: skip
    for unit in units:
        mine = {r["setup"]: r for r in rows if r["unit"] == unit}
        oracle = next(iter(mine.values()))["oracle"]
        cells = [f"{mine[n]['pick']} ({mine[n]['regret']:.1f})" if n in mine else "-" for n in summary]
        lines.append(f"| {unit} | {', '.join(f'{k}: {v:.1f}' for k, v in oracle.items())} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: picked layer (regret in points)."]
    atomic_write(results_dir / f"{tag}.md", "\n".join(lines) + "\n")
    return True


SHORT_SETUPS = ("exhaustive", "probe-halving", "probe-keep2", "auto", "probe", "gradient")


def summary_md(d: dict, setups: tuple[str, ...] = SHORT_SETUPS) -> str:
    """The short table docs/selection.md quotes: per selector its units, regret (validation points
    x100 against the oracle's best layer: mean, max, share within REGRET_TARGET), cost as a
    fraction of exhaustive's seconds, and its pick per unit. From a report's JSON only:
    `python benchmarks/selection_report.py docs/results/selection-<model>-<method>.json`."""
    s = d["summary"]
    rows = [r for r in d["rows"] if r["setup"] in s]
    units = sorted({r["unit"] for r in rows if r["setup"] != "oracle-other-seed"})
    lines = [f"| selector | units | regret mean (pts) | regret max | regret <= {REGRET_TARGET} | cost vs exhaustive | "
             f"picks ({', '.join(units)}) |", "|---|---|---|---|---|---|---|"]
    for name in (n for n in setups if n in s):
        x = s[name]
        picks = {r["unit"]: r["pick"] for r in rows if r["setup"] == name}
        lines.append(f"| {name} | {x['units']} | {x['regret_mean']:.2f} | {x['regret_max']:.2f} | {x['within_target']:.0%} | "
                     f"{_f(x['cost'])} | {', '.join(str(picks.get(u, '-')) for u in units)} |")
    flat = d.get("oracle_flat_units") or []
    lines += ["", f"{len(units)} units" + (f" of {d['planned_units']}" if d.get("planned_units") else "")
              + (" (partial)" if d.get("partial") else "")
              + (f"; left out as flat (every layer within {REGRET_TARGET} points): {', '.join(flat)}" if flat else "") + "."]
    return "\n".join(lines)


if __name__ == "__main__":  # print docs/selection.md's short table from a report's JSON
    from cmdline import print_summary

    print_summary(summary_md, "Print docs/selection.md's short table (every selector's regret and cost) from a selection report's JSON.",
                  "docs/results/selection-<model>-<method>.json")
