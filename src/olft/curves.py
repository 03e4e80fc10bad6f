"""Training curves: per-step loss, learning rate and gradient norm of every training piece.

Each strategy and candidate writes `curves/<piece>.csv` in the run folder (one row per
optimizer step, flushed as it goes, so a killed run keeps its curve so far); with
`--report-to tensorboard|wandb|mlflow` the same values go to accelerate's tracker of that name.
`plot_curves` draws `loss.png` beside `layers.png` when the run ends or is stopped; a curve whose
piece did not finish is drawn dashed and labelled so.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from olft.atomic import atomic_write
from olft.errors import OlftError

COLUMNS = ("step", "loss", "lr", "grad_norm")
TRACKERS = {"tensorboard": ("tensorboard or tensorboardX", "tensorboardX"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
# The subfolder of the run folder each tracker writes its local files in (olft's own, see runfolder).
TRACKER_FOLDERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlruns"}


def check_tracker(name: str) -> None:
    """OlftError (exit 2) when `name` is not a tracker or its package is not installed."""
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    if name not in TRACKERS:
        raise OlftError(f"Unknown --report-to {name!r}: use one of {', '.join(TRACKERS)}.")
    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}[name]()
    if not available:
        needs, pkg = TRACKERS[name]
        raise OlftError(f"--report-to {name} needs the {needs} package, which is not installed: pip install {pkg}.")


def make_tracker(name: str, folder: Path):
    """A started accelerate tracker whose local files go to the run folder's `TRACKER_FOLDERS[name]`.

    wandb's project is the run folder's name, and its local copy (wandb's `dir`) the run folder.
    """
    check_tracker(name)
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    run = folder.resolve().name
    local = folder / TRACKER_FOLDERS[name]
    if name == "tensorboard":
        tracker = TensorBoardTracker(run, local)
    elif name == "wandb":
        tracker = WandBTracker(run, dir=str(local.parent))  # wandb makes its `wandb` folder inside `dir`
    else:
        tracker = MLflowTracker(run, str(local))
    tracker.start()
    return tracker


class Curves:
    """Per-piece step logger: `for_piece(name)` gives the `on_step` callback `train.fit` calls."""

    def __init__(self, folder: Path, tracker: Any = None):
        self.folder = Path(folder) / "curves"
        self.tracker = tracker
        self._files: list = []

    def for_piece(self, name: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{curve_name(name)}.csv"
        state: dict[str, Any] = {}

        def on_step(values: dict[str, float]) -> None:
            if "file" not in state or values["step"] == 1:
                if "file" in state:
                    state["file"].close()
                # A piece trained from the start begins a fresh curve; one resumed from a checkpoint continues its
                # file from there: the rows past the checkpoint (written before the stop) are dropped, so the file
                # is the one an uninterrupted run writes.
                kept = [] if values["step"] == 1 else _rows_before(path, values["step"])
                head = io.StringIO(newline="")
                writer = csv.DictWriter(head, fieldnames=COLUMNS)
                writer.writeheader()
                writer.writerows(kept)
                atomic_write(path, head.getvalue())  # a kill here leaves the old file or the new, never a cut one
                state["file"] = open(path, "a", newline="")  # noqa: SIM115 - closed by `close`
                self._files.append(state["file"])
                state["writer"] = csv.DictWriter(state["file"], fieldnames=COLUMNS)
            state["writer"].writerow({k: values[k] for k in COLUMNS})
            state["file"].flush()
            if self.tracker is not None:
                self.tracker.log({f"{name}/{k}": values[k] for k in COLUMNS[1:]}, step=int(values["step"]))

        return on_step

    def finish(self) -> None:
        """Close the curve files and the tracker."""
        for f in self._files:
            f.close()
        self._files.clear()
        if self.tracker is not None:
            self.tracker.finish()


def _rows_before(path: Path, step: float) -> list[dict]:
    """The rows of a curve file whose step comes before `step` (none when there is no file); a row a
    kill cut short is dropped."""
    if not path.is_file():
        return []
    kept = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                if float(row["step"]) < step and all(row.get(k) not in (None, "") for k in COLUMNS):
                    kept.append({k: row[k] for k in COLUMNS})
            except (TypeError, ValueError):
                continue
    return kept


def read_curve(path: Path) -> dict[str, list[float]]:
    """A curve file's columns, one value per optimizer step, in step order.

    A strategy resumed from a checkpoint appends its continuation to the file, which may already
    hold the steps after that checkpoint from before the stop: a row whose step is not past the
    one before it starts over from there, so each step keeps the row of the training that went on.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    kept: list[dict] = []
    for row in rows:
        step = float(row["step"])
        while kept and float(kept[-1]["step"]) >= step:
            kept.pop()
        kept.append(row)
    return {k: [float(r[k]) for r in kept] for k in COLUMNS}


def curve_name(piece: str) -> str:
    """The curve file's stem of a piece (`Curves.for_piece`): 'candidate 3' -> 'candidate-3'."""
    from olft.runfiles import safe_name

    return safe_name(piece.replace(" ", "-"))


def unfinished_note(name: str, curve: dict[str, list[float]], results: dict) -> str | None:
    """None when curve `name` is a finished piece's whole curve; else what the legend says of it:
    '(failed after step N)' for a piece recorded as failed, '(stopped at step N, unfinished)' for
    one with no finished piece of that length (the run stopped during it)."""
    last = int(curve["step"][-1])
    for s, entry in (results.get("strategies") or {}).items():
        if curve_name(s) == name:
            # A finished strategy trained `steps` steps (pieces from before olft recorded them: trusted).
            if entry.get("steps") in (None, last):
                return None
    for s in results.get("failed") or {}:
        if curve_name(s) == name:
            return f"(failed after step {last})"
    sel = results.get("selection") or {}
    for c in sel.get("candidates") or []:
        if name == curve_name(f"candidate {c['layer']}"):
            # `candidates` keeps each layer's latest round; a later round's curve starts its file afresh,
            # so a curve longer or shorter than that round's budget belongs to a round that did not finish.
            if c.get("error"):
                return f"(failed after step {last})"
            if c.get("steps") in (None, last):
                return None
    return f"(stopped at step {last}, unfinished)"


def plot_curves(folder: Path, path: Path, results: dict) -> bool:
    """Write `curves_figure` to `path`; False when the run folder has no curves."""
    from olft.plots import save_figure  # plots reads results (report, torch): only a drawing needs it

    return save_figure(curves_figure(folder, results), path)


def curves_figure(folder: Path, results: dict):
    """Training loss per step of every strategy (thick) and candidate (thin), with the learning
    rate of the strategies on a second axis below, each in its loss curve's colour, with a legend. The curve of a piece `results` does not list as
    finished (`unfinished_note`: the run stopped or failed during it) is dashed, its legend label
    saying where it ends, and the title says that dashed curves are unfinished.
    A matplotlib Figure; None when the run folder has no curves."""
    files = sorted((Path(folder) / "curves").glob("*.csv"))
    curves = {p.stem: read_curve(p) for p in files}
    curves = {k: v for k, v in curves.items() if v["step"]}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    stopped = False
    for name, c in curves.items():
        candidate = name.startswith("candidate")
        # A stopped piece's curve is kept, not dropped: where and how its loss was going when it stopped
        # is what one looks at to decide whether to continue it. Dashed and labelled, it is not read as
        # the finished curve of its strategy (which, resumed, would go on from where it ends).
        note = unfinished_note(name, c, results)
        stopped |= note is not None
        style = "--" if note else "-"
        label = f"{name} {note}" if note else name
        (line,) = ax.plot(c["step"], c["loss"], style, lw=0.8 if candidate else 1.6, alpha=0.5 if candidate else 1.0,
                          label=label)
        if not candidate:  # the loss line's colour: the lr panel's own colour cycle would match another curve's
            ax_lr.plot(c["step"], c["lr"], style, lw=1.2, label=label, color=line.get_color())
    ax.set_ylabel("training loss")
    losses = [x for c in curves.values() for x in c["loss"]]
    if min(losses) > 0 and max(losses) > 10 * min(losses):  # log only where the loss falls by orders of magnitude
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    title = f"training curves: {Path(folder).resolve().name}"
    ax.set_title(title + ("\ndashed: unfinished (the run stopped or the piece failed)" if stopped else ""), fontsize=9)
    ax_lr.set_ylabel("learning rate")
    if ax_lr.get_lines():  # candidates' learning rates are not drawn: the legend names the strategies drawn
        ax_lr.legend(fontsize=6, ncol=3)
    ax_lr.set_xlabel("optimizer step")
    fig.tight_layout()
    return fig
