"""Keep a paper benchmark's finished runs in the repository, small enough to commit.

    python benchmarks/keep_pieces.py benchmarks/work benchmarks/results/paper-pieces

For every `<model>-<method>` work dir of `benchmarks/paper.py` under SOURCE, copies bench.json and,
of each finished run (results.json status complete, finished with failures or failed), its
config.json, results.json, table.md and pieces/*.json into DEST: what the report reads and what
tells paper.py that the run is done. Weights, plots, curves, locks and the derived data splits
(rebuilt from GLUE by paper.py) stay behind; unfinished runs are left out, so a resumed benchmark
redoes them from the start rather than from pieces whose weights are missing.

On another machine, `python benchmarks/paper.py ... --work-dir DEST --report-only` rebuilds the
report from DEST, and the same command without --report-only continues the plan, skipping the
finished runs (run folders are written into DEST then; copy them back with this script).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

FINISHED = ("complete", "finished with failures", "failed")  # as paper.py's is_finished
FILES = ("config.json", "results.json", "table.md")


def finished(run: Path) -> bool:
    try:
        return json.loads((run / "results.json").read_text()).get("status") in FINISHED
    except (OSError, ValueError):
        return False


def keep(source: Path, dest: Path) -> dict[str, int]:
    """Copy each work dir's bench.json and finished runs' small files; {work dir name: runs kept}."""
    kept = {}
    for work in sorted(p for p in source.iterdir() if (p / "bench.json").is_file()):
        out = dest / work.name
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "bench.json", out / "bench.json")
        runs = [r for r in sorted(work.iterdir()) if r.is_dir() and finished(r)]
        for run in runs:
            (out / run.name / "pieces").mkdir(parents=True, exist_ok=True)
            for name in FILES:
                if (run / name).is_file():
                    shutil.copy2(run / name, out / run.name / name)
            for piece in (run / "pieces").glob("*.json"):
                shutil.copy2(piece, out / run.name / "pieces" / piece.name)
        kept[work.name] = len(runs)
    return kept


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benchmarks/keep_pieces.py SOURCE_WORK_DIR DEST")
    source = Path(sys.argv[1])
    if not source.is_dir():
        raise SystemExit(f"{source} is not a folder: give the --work-dir paper.py ran with.")
    for name, n in keep(source, Path(sys.argv[2])).items():
        print(f"{name}: {n} finished runs kept in {Path(sys.argv[2]) / name}")
