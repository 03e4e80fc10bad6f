"""Training curves: per-step loss, learning rate and gradient norm of every training piece.

Each strategy and candidate writes `curves/<piece>.csv` in the run folder (one row per
optimizer step, flushed as it goes, so a killed run keeps its curve so far); with
`--report-to tensorboard|wandb|mlflow` the same values go to accelerate's tracker of that name.
`plot_curves` draws `loss.png` beside `layers.png` when the run ends or is stopped.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from olft.atomic import atomic_path
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
        from olft.runfiles import safe_name

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{safe_name(name.replace(' ', '-'))}.csv"
        state: dict[str, Any] = {}

        def on_step(values: dict[str, float]) -> None:
            if "file" not in state or values["step"] == 1:
                if "file" in state:
                    state["file"].close()
                # A piece trained from the start begins a fresh curve; one resumed from a checkpoint continues its file.
                fresh = values["step"] == 1 or not path.is_file()
                state["file"] = open(path, "w" if fresh else "a", newline="")  # noqa: SIM115 - closed by `close`
                self._files.append(state["file"])
                state["writer"] = csv.DictWriter(state["file"], fieldnames=COLUMNS)
                if fresh:
                    state["writer"].writeheader()
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


def read_curve(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in COLUMNS}


def plot_curves(folder: Path, path: Path) -> bool:
    """Training loss per step of every strategy (solid) and candidate (thin), with the learning
    rate on a second axis; False when the run folder has no curves."""
    files = sorted((Path(folder) / "curves").glob("*.csv"))
    curves = {p.stem: read_curve(p) for p in files}
    curves = {k: v for k, v in curves.items() if v["step"]}
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=(3, 1))
    for name, c in curves.items():
        candidate = name.startswith("candidate")
        ax.plot(c["step"], c["loss"], lw=0.8 if candidate else 1.6, alpha=0.5 if candidate else 1.0, label=name)
        if not candidate:
            ax_lr.plot(c["step"], c["lr"], lw=1.2, label=name)
    ax.set_ylabel("training loss")
    losses = [x for c in curves.values() for x in c["loss"]]
    if min(losses) > 0 and max(losses) > 10 * min(losses):  # log only where the loss falls by orders of magnitude
        ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"training curves: {Path(folder).resolve().name}")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return True
