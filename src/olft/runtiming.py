"""Whether the times a run folder shows compare: timed by one run, under one set of conditions.

Every piece a run saves is stamped with the run that timed it (`RunFolder.record_conditions`:
process, host, start, device, threads, processes, `CPU_SCOPE`). `folder_timing` gathers the
stamps of the times table.md shows (Table 2's strategies, the candidates' table, the selection's
total) and `compare_timing` says whether they compare, and if not in what they differ; a folder
continued by several runs labels them in the order they started (`run_labels`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from olft import report
from olft.select import unfinished

if TYPE_CHECKING:
    from olft.runfolder import RunFolder

# What a piece's time depends on besides the work itself; pieces that differ in any are flagged.
TIMING_FIELDS = ("host", "device", "torch_threads", "world_size", "cpu_scope")
# What a strategy's `train_cpu_seconds` counts. Stamped so that times counted differently never
# compare unflagged: olft before this stamp also counted building the evaluation splits' caches.
CPU_SCOPE = "training + training split's cache build"


def shown_candidates(folder: RunFolder, results: dict) -> list[str]:
    """The candidate pieces whose times table.md shows: each layer's last trained round (a layer's
    earlier rounds are pieces too, but `candidates` keeps its last), or every piece before the
    selection has finished. Times nobody sees need not compare."""
    names = folder.piece_names("candidate")
    sel = results.get("selection")
    if not sel:
        return names
    shown = {f"{c['layer']}-{c['steps']}" for c in sel.get("candidates") or [] if c.get("steps")}
    return [n for n in names if n in shown]


def folder_timing(folder: RunFolder, results: dict, pieces: dict[str, dict]) -> dict:
    """results.json's `timing`: `compare_timing` of the times table.md shows, each part as it is shown.

    "strategies": Table 2's, and with them the finished selection's total (`report.SELECTION`)
    where the whole-run line adds it to OLFT's training and divides by all-layer training (olft
    and full both finished). "candidates": the candidates' table's (`shown_candidates`) and the selection's
    total. That total sums every round of every candidate (a layer's earlier, unshown rounds too)
    and the stages between them: the probe stage (its piece's stamp, where it ran) and what the run
    that finished the selection ran (its piece's stamp). A selection stopped and continued was
    timed by each of those runs, and is marked with all of them, as a strategy is with its one.
    `pieces`: the folder's candidate pieces as `refresh` read them (name -> piece).
    """
    strategies = results["strategies"]

    def stamp(kind: str, name: str | None) -> dict | None:
        return (folder.read_piece(kind, name) or {}).get("timed_by")

    shown = {n: s.get("timed_by") for n, s in strategies.items()}
    candidates = {n: (pieces.get(n) or {}).get("timed_by") for n in shown_candidates(folder, results)}
    sel = results.get("selection")
    if sel and not unfinished(sel):
        total = [p.get("timed_by") for p in pieces.values()]
        for kind in ("probe", "selection"):
            if folder.read_piece(kind, None) is not None:
                total.append(stamp(kind, None))
        if total:  # none before its first piece is saved
            candidates[report.SELECTION] = total
            if {"olft", "full"} <= set(strategies):
                shown[report.SELECTION] = total
    resumed = [n for n, s in strategies.items() if s.get("resumed_at")]
    partial = [n for n in resumed if strategies[n].get("seconds_before_resume") is None]  # missing: an older olft's
    return {"strategies": compare_timing(shown, resumed, partial),
            "candidates": compare_timing(candidates)}


def compare_timing(records: dict[str, dict | None | list[dict | None]], resumed: list[str] | None = None,
                   partial: list[str] | None = None) -> dict:
    """Whether the times of these pieces compare: timed by one run under one set of conditions.

    `records` maps a piece to its `timed_by` stamp (None: written by an olft that kept none), or
    to the stamps of every piece a total sums (the selection's: `folder_timing`), which lists it
    under each run among them (and as unrecorded if any is None); `resumed` names pieces whose
    training resumed from a checkpoint: their time adds the runs' spans before and after it (timed
    by two processes), or, those also in `partial` (a checkpoint from an olft that did not save its
    time), counts only the steps after it. Returns {"comparable", "runs": [{"label", "pieces", pid,
    host, ...}] in the order they started (labels from `run_labels`), "differs_in" (fields, "run"
    when more than one run), "unrecorded", "resumed_mid_training", "partial_time"}.
    """
    runs: dict[tuple, dict] = {}
    unrecorded = []
    for name, recs in records.items():
        recs = recs if isinstance(recs, list) else [recs]
        if not recs or not all(recs):
            unrecorded.append(name)
        for rec in filter(None, recs):
            key = (rec.get("host"), rec.get("pid"), rec.get("started"))
            pieces = runs.setdefault(key, {**rec, "pieces": []})["pieces"]
            if name not in pieces:
                pieces.append(name)
    # Labelled in the order the runs started, not the pieces' (alphabetical) order: otherwise
    # the run that continued a folder could read as its first.
    listed = sorted(runs.values(), key=lambda r: (str(r.get("started") or ""), str(r.get("pid"))))
    for run, label in zip(listed, run_labels(len(listed)), strict=True):
        run["label"] = label
    differs = (["run"] if len(listed) > 1 else []) + [f for f in TIMING_FIELDS if len({r.get(f) for r in listed}) > 1]
    resumed = list(resumed or [])
    return {"comparable": not (differs or unrecorded or resumed), "runs": listed, "differs_in": differs,
            "unrecorded": unrecorded, "resumed_mid_training": resumed, "partial_time": list(partial or [])}  # fmt: skip


ORDINALS = ("first", "second", "third", "fourth", "fifth")


def run_labels(n: int) -> list[str]:
    """Names for `n` runs of one folder in the order they started, as table.md marks times with
    them: 'first run', 'continued run' (the usual resume), or 'first run', 'second run', ...."""
    if n == 2:
        return ["first run", "continued run"]
    return [f"{ORDINALS[i]} run" if i < len(ORDINALS) else f"run {i + 1}" for i in range(n)]
