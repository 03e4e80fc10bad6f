"""The run folder is the unit of work: finished pieces are kept, a rerun continues.

Layout:
    config.json            resolved config (compared on resume)
    results.json           rebuilt from every finished piece; `complete` says whether it is all there;
                           `data_sha256` the examples used (a rerun on other data is refused: `_check_data`)
    pieces/candidate-<L>-<steps>.json, pieces/probe.json, pieces/selection.json, pieces/strategy-<name>.json,
    pieces/failed-<name>.json
                           one file per finished piece, each stamped with the run that made it (`timed_by`)
                           (probe.json: a probe stage's scores, ranking and finalists, `select.probe_piece`)
    weights/<name>.safetensors                               tuned module + head per strategy
    checkpoints/<name>.pt                                    mid-training state (optional; deleted once <name> finishes)
    table.md                                                 rewritten with results.json: until the run ends, marked UNFINISHED
    layers.png, loss.png                                     drawn when the run ends (before results.json says so) or stops
    tensorboard/, mlruns/ or wandb/                          --report-to's tracker files (see curves.TRACKER_FOLDERS)
    olft.lock, olft.lock.json                                held while a run writes (see `runlock`)

Every file is written atomically (temporary file, then rename) the moment its piece finishes,
so a run killed at any instant leaves only whole files, and results.json and table.md never claim
more than the pieces that exist. table.md keeps the finished work in view, marked unfinished
from the moment a run starts until it ends, so a killed run's folder still says so. Whatever
subcommand or --strategies a run has, results.json holds every piece the folder holds, so no run
drops what an earlier one finished. A folder whose run
stopped before any work (config.json, the lock, empty subfolders) holds nothing to keep, so a run
with another config takes it over (`never_started`).

olft deletes only files it writes: `--overwrite` clears a folder only when config.json is
olft's and every entry is one of the names above (a desktop's .DS_Store or Thumbs.db aside, left in
place), and only once the inputs have been validated.
A tracker's folder counts as olft's only when config.json names that tracker (train.report_to),
so a folder of the same name that olft did not make is never deleted.

Which entries are olft's, and whether config.json is a run this config may continue: `olft.ownership`.
Reading a folder without taking its lock (`olft evaluate`, `olft predict`): `olft.runfiles`.
Whether the times its pieces were stamped with compare: `olft.runtiming`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Collection
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from olft import curves, plots, report, runlock
from olft.errors import OlftError, stops_deferred
from olft.layerspec import strategy_key
from olft.ownership import (
    LOCK_FILES,
    OWN_FILES,
    OWN_FOLDERS,
    RATED,
    config_differences,
    folder_work,
    foreign_entries,
    is_os_metadata,
    is_own,
    is_tracker_folder,
    kept_config,
    never_started,
    rate_differences,
    resuming_options,
    resuming_rates,
    saved_config,
    tracker_folder,
)
from olft.runfiles import checkpoint_file, folder_status, weights_file
from olft.runtiming import CPU_SCOPE, folder_timing
from olft.select import unfinished, unfinished_entry

log = logging.getLogger(__name__)


class RunFolder:
    """Reads and writes one run folder; only the writer process (rank 0) touches disk.

    Use it as a context manager: the writer holds the folder's lock from `start` until the
    `with` block ends, however it ends. Raises OlftError (before anything is written or deleted)
    when the path is a file, holds a different run's config (unless that run never started: see
    `never_started`), is held by a live run, or is not olft's to overwrite.
    """

    def __init__(self, path: Path, config: dict, overwrite: bool = False, writer: bool = True, selects: bool = True,
                 rates: Collection[str] = RATED):
        self.path = Path(path)
        self.config = config
        self.selects = selects  # whether this run selects a layer (reads the selection options: `ownership._unread`)
        # which of olft, final, full it trains (whose --strategy-lr rates it reads; explicit layers train at --lr)
        self.rates = set(rates) & set(RATED)
        self.overwrite = overwrite
        self.writer = writer
        self.started = datetime.now(timezone.utc).isoformat()  # identifies this run in its pieces
        self.timed_by: dict | None = None  # set by `record_conditions` once the device is known
        self.requested: list[str] = []  # strategy names this run was asked for, listed first
        self._lock: runlock.RunLock | None = None
        self.taken_over = False  # the folder holds another config's run that never started (see `never_started`)
        self._check(probe_lock=True)
        if writer:
            self._check_writable()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _check(self, probe_lock: bool) -> None:
        """Refuse a folder this run may not write, or (with --overwrite) may not clear."""
        if self.path.exists() and not self.path.is_dir():
            raise OlftError(f"Output path {self.path} is a file, not a folder. Pass --out with a folder path.")
        if not self.path.is_dir() or (self.overwrite and not self.writer):
            return  # other processes leave an --overwrite to rank 0
        if self.writer and probe_lock:
            held, holder = runlock.probe(self.path)
            if held:
                raise runlock.in_use(self.path, holder)
        saved = saved_config(self.path)
        if self.overwrite:
            self._check_overwrite(saved)
            return
        if saved is None:
            self._check_unowned()
            if not self.selects:  # a run that selects nothing records no selection options it ignored
                from olft.config import RunConfig

                self.config = {**self.config, "selection": RunConfig().to_dict()["selection"]}
            if not self.rates:  # nor rates it did not train at
                self.config = {**self.config, "train": {**self.config["train"], "strategy_lr": None}}
            return
        # Selection options a finished piece depends on must match; in a folder with no selection work
        # this run's values are taken (`kept_config`), whichever order the runs came in. Rates likewise,
        # per strategy: those of the strategies this run trains that the folder holds work of must
        # match (--lr or --strategy-lr, as `TrainConfig.lr_for` resolves them); config.json then records
        # this run's rates for what it trains and the folder's for the rest (`ownership.kept_rates`).
        # --lr itself is compared as a whole only where explicit layers' work, which trains at it, is held.
        work = folder_work(self.path)
        held, whole_lr = work.rated, work.layers
        rated, selects = self.rates & held, self.selects and work.selects
        diffs = config_differences(saved, self.config, selects, rated, whole_lr)
        self.taken_over = bool(diffs) and never_started(self.path)
        if not diffs:  # options this run does not read keep the folder's values in config.json
            self.config = kept_config(saved, self.config, self.selects, self.rates, held)
        if diffs and not self.taken_over:
            listing = _listing(diffs, 8, "; ", "; and")
            changed = list(rate_differences(saved, self.config, rated, whole_lr))  # named with their rates in `diffs`
            options = resuming_options(saved, self.config, selects, whole_lr)
            folder_options = f"the folder's {options}" if options else ""
            same = "rerun with the same options to resume" + (f" ({folder_options})" if options else "")
            if changed:
                rates = resuming_rates(saved, self.config, rated, whole_lr)
                same = (f"give {' and '.join(changed)} the folder's rate{'s' * (len(changed) > 1)} to resume (--strategy-lr "
                        f"{rates}{' and ' + folder_options if options else ''})")
            raise OlftError(
                f"Run folder {self.path} holds a run with a different config ({listing}). Use another "
                f"--out, {same}, or pass --overwrite to start afresh."
            )

    def _check_overwrite(self, saved: dict | None) -> None:
        """--overwrite deletes only olft's files: refuse a folder that is no run folder, or a run
        folder that also holds files olft did not write (they would be left behind)."""
        foreign = foreign_entries(self.path)
        if saved is not None and foreign:
            raise OlftError(f"{self.path} is an olft run folder but also holds files olft did not write "
                            f"({_listing(foreign)}), which --overwrite will not delete. Nothing was deleted: move them "
                            "out of the folder and rerun, or pass another --out.")
        if foreign or (saved is None and any(e.name not in LOCK_FILES and not is_os_metadata(e) for e in self.path.iterdir())):
            what = f"it holds {_listing(foreign)}" if foreign else "its config.json is not one olft wrote"
            raise OlftError(f"--overwrite clears only a run folder olft made, and {self.path} is not one ({what}). "
                            "Nothing was deleted: pass another --out, or move those files away yourself.")

    def _check_unowned(self) -> None:
        """A folder with no config.json of olft's is no run folder: olft writes in it only when it
        holds nothing but olft's files (it is empty, or a run died before writing config.json), so
        a run never mixes its files with the user's and `--overwrite` can later clear it."""
        clash = sorted(e.name for e in self.path.iterdir() if e.name in (OWN_FILES | set(OWN_FOLDERS)) - LOCK_FILES)
        if clash:
            raise OlftError(f"{self.path} holds {clash[0]} but no config.json written by olft, so it is not an olft "
                            "run folder and olft will not write over it. Pass another --out.")
        foreign = foreign_entries(self.path)
        if foreign:
            raise OlftError(f"{self.path} is not an olft run folder: it holds files olft did not write ({_listing(foreign)}). "
                            "Choose an empty or new --out.")

    def _check_data(self, data_sha256: dict[str, str] | None) -> None:
        """Refuse to add to work done on other examples: a data file edited since (or a GLUE folder
        or `datasets` copy that changed) would put pieces trained on old and new data side by side,
        as config.json records only the files' paths. A folder whose results.json records no
        fingerprint (older olft) continues unchecked; nothing is written or deleted before this."""
        if self.overwrite or self.taken_over or not data_sha256 or not self.path.is_dir():
            return
        try:
            saved = json.loads((self.path / "results.json").read_text()).get("data_sha256")
        except (OSError, ValueError, AttributeError):
            return
        if not isinstance(saved, dict):
            return
        changed = [s for s in data_sha256 if s in saved and saved[s] != data_sha256[s]]
        if changed:
            d = self.config.get("data") or {}
            files = {"train": d.get("train_file"), "validation": d.get("validation_file")} if d.get("data_source") == "file" else {}
            named = " and ".join(f"{s} ({files[s]})" if files.get(s) else s for s in changed)
            raise OlftError(
                f"Run folder {self.path} holds work done on other data: the examples of the {named} split"
                f"{'s' if len(changed) > 1 else ''} (texts or labels) differ from those its finished work used. Use another "
                "--out for this data, or pass --overwrite to start afresh."
            )

    def _check_writable(self) -> None:
        """Fail before any work if the folder (or the parent it will be made in) is read-only."""
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise OlftError(f"Cannot create output folder {self.path}: {probe} is a file. Pass --out with a folder path.")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise OlftError(f"Cannot write to output folder {self.path} ({probe} is not writable). Pass --out with a writable folder.")

    def start(self, data_sha256: dict[str, str] | None = None) -> None:
        """Lock the folder, check it again, clear it for --overwrite, and record the config.

        Called once the inputs (model, data, options) have been validated, so bad input never
        deletes or writes anything. A folder whose last run died (its lock free, results.json
        still "running") is taken over: its finished pieces are kept. `data_sha256` ({split:
        `data.fingerprint`}) must match what the folder's results.json records (`_check_data`).
        """
        if not self.writer:
            self._check_data(data_sha256)  # a process that sees the folder refuses along with rank 0
            return
        self._make_writable("")
        self._lock = runlock.RunLock(self.path, self.started)
        previous = self._lock.acquire()
        try:
            self._check(probe_lock=False)  # the folder may have changed while the inputs loaded
            self._check_data(data_sha256)
        except OlftError:  # refused: the folder keeps naming the run that last worked in it
            holder = self.path / runlock.HOLDER_FILE
            if previous is None:
                holder.unlink(missing_ok=True)
            else:
                report.write_json(holder, previous)
            raise
        if self.overwrite:
            self._remove_own_files()
        elif self.taken_over:
            log.warning("%s: its run with another config stopped before any work (no results.json, no pieces); "
                        "this run takes the folder over", self.path)  # fmt: skip
        elif folder_status(self.path) == "running":
            log.warning("%s: the run by %s stopped without finishing (killed?); continuing it", self.path,
                        runlock.describe(previous))  # fmt: skip
        for sub in OWN_FOLDERS:
            self._make_writable(sub)
        report.write_json(self.path / "config.json", self.config)

    def _make_writable(self, sub: str) -> None:
        probe = self.path / sub / ".write-test"
        try:
            (self.path / sub).mkdir(parents=True, exist_ok=True)
            probe.write_text("ok")
        except OSError as exc:
            with suppress(OSError):  # created, then a full disk failed its write: leave nothing behind
                probe.unlink()
            raise OlftError(
                f"Cannot write to output folder {self.path}: {exc.strerror}. Pass --out with a writable folder."
            ) from exc
        probe.unlink()

    def _remove_own_files(self) -> None:
        """--overwrite: delete olft's files (never the lock this run holds, never anything else)."""
        tracker = tracker_folder(self.path)
        for entry in self.path.iterdir():
            if is_tracker_folder(entry, tracker):
                shutil.rmtree(entry)  # links inside are removed, never followed
            elif entry.name in OWN_FOLDERS and entry.is_dir() and not entry.is_symlink():
                for inner in entry.iterdir():
                    if is_own(inner, entry.name):
                        inner.unlink()
                with suppress(OSError):  # not empty: something appeared that olft did not write
                    entry.rmdir()
            elif is_own(entry) and entry.name not in LOCK_FILES:
                entry.unlink()

    def record_conditions(self, device: Any, world_size: int) -> None:
        """What this run's timings depend on, stamped on every piece it saves (see `runtiming.compare_timing`)."""
        import torch

        name = str(device)
        if getattr(device, "type", None) == "cuda":
            name += f" ({torch.cuda.get_device_name(device)})"
        record = runlock.this_process(self.started)
        del record["command"]
        self.timed_by = {**record, "torch_threads": torch.get_num_threads(), "device": name, "world_size": world_size,
                         "cpu_scope": CPU_SCOPE}

    # -- pieces ----------------------------------------------------------------------------------
    def _piece(self, kind: str, name: str | None) -> Path:
        return self.path / "pieces" / (f"{kind}.json" if name is None else f"{kind}-{name}.json")

    def piece_names(self, kind: str) -> list[str]:
        """Names of the saved pieces of `kind`, sorted."""
        return sorted(p.name[len(kind) + 1 : -5] for p in (self.path / "pieces").glob(f"{kind}-*.json"))

    def read_piece(self, kind: str, name: str | None) -> dict | None:
        """A saved piece as written, its `timed_by` stamp included (`runtiming.folder_timing` reads
        it); None when there is none or it is damaged."""
        path = self._piece(kind, name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # cannot happen with atomic writes, but never trust a damaged piece

    def load_piece(self, kind: str, name: str | None = None) -> dict | None:
        """A saved piece as it was given to `save_piece` (without its `timed_by` stamp), or None."""
        piece = self.read_piece(kind, name)
        if piece is not None:
            piece.pop("timed_by", None)
        return piece

    def save_piece(self, kind: str, name: str | None, data: dict) -> None:
        if self.writer:
            # The load average at save time says how busy the machine was (the 15-minute figure
            # covers most pieces); timings taken under different loads are not comparable in wall time.
            stamp = {**(self.timed_by or {}), "load_average": [round(x, 2) for x in os.getloadavg()]} if self.timed_by else self.timed_by
            report.write_json(self._piece(kind, name), {**data, "timed_by": stamp})

    def drop_piece(self, kind: str, name: str | None) -> None:
        if self.writer:
            self._piece(kind, name).unlink(missing_ok=True)

    def weights_path(self, name: str) -> Path:
        return weights_file(self.path, name)

    def checkpoint_path(self, name: str) -> Path:
        return checkpoint_file(self.path, name)

    def drop_checkpoint(self, name: str) -> None:
        """Delete strategy `name`'s mid-training checkpoint once its weights and piece are saved
        (`api._run_strategy`): a rerun then skips the strategy, so the state (an all-layer one is
        as large as the model's trainable part and its optimizer's) is of no further use."""
        if self.writer:
            self.checkpoint_path(name).unlink(missing_ok=True)

    def refresh(self, results: dict) -> None:
        """Rebuild `results` from every finished piece in the folder (the writer's view of disk).

        Sets the selection (finished, else `unfinished_entry` of the candidates finished so far),
        every finished strategy (a piece with its weights) and failure (both in
        `layerspec.strategy_key`'s order), the strategy names (this run's first), and `timing`:
        whether the times table.md shows compare (`runtiming.folder_timing`).
        Other processes keep what they were told.
        """
        if not self.writer:
            return
        done = {n: p for n in self.piece_names("strategy") if (p := self.read_piece("strategy", n)) and self.weights_path(n).is_file()}
        failed = {n: p for n in self.piece_names("failed") if n not in done and (p := self.read_piece("failed", n))}
        others = sorted({*done, *failed} - set(self.requested), key=strategy_key)
        names = list(dict.fromkeys([*self.requested, *others]))
        results["strategy_names"] = names
        ordered = sorted(names, key=strategy_key)  # the pieces' one order, whatever the run asked first
        results["strategies"] = {n: done[n] for n in ordered if n in done}
        results["failed"] = {n: failed[n] for n in ordered if n in failed}
        pieces = {n: p for n in self.piece_names("candidate") if (p := self.read_piece("candidate", n))}  # each read once
        results["selection"] = self._selection(results.get("selection"), pieces)
        results["optimistic_scores"] = report.optimistic_scores(results)  # Table 1's ‡: the split that chose OLFT's layer
        results["timing"] = folder_timing(self, results, pieces)

    def _selection(self, known: dict | None, pieces: dict[str, dict]) -> dict | None:
        """The finished selection (its piece, else `known` when that is finished), else the folder's
        finished candidates (`pieces`: name -> candidate piece as read) and its finished probe stage
        (pieces/probe.json) as `unfinished_entry` (None when it holds neither)."""
        sel = (self.load_piece("selection") or {}).get("selection") or known
        if sel and not unfinished(sel):
            return sel
        trained = [{k: v for k, v in p.items() if k != "timed_by"} for p in pieces.values() if "layer" in p]
        probe = self.load_piece("probe")
        probe = probe if probe and isinstance(probe.get("candidates"), list) else None
        return unfinished_entry(trained, self.config.get("selection") or {}, probe) if trained or probe else None

    def write_results(self, results: dict) -> None:
        """results.json, then table.md from the same results: while a run has not ended its status
        ("running", "interrupted", ...) heads table.md with a banner saying the folder is unfinished.

        table.md is rewritten, never deleted: an earlier run's finished work stays in it, and since
        `api._begin` writes it as soon as a run starts (the plots are left as the last ended run drew
        them, from finished pieces only), a run killed outright still leaves a table that says so.
        """
        if self.writer:
            report.write_json(self.path / "results.json", results)
            self._write_table(results)

    def _write_table(self, results: dict) -> None:
        report.atomic_write(self.path / "table.md", report.table_md(results, self.path))

    def write_stopped(self, results: dict) -> None:
        """A run stopped early (Ctrl-C, SIGTERM, an error): results.json and table.md say so, and the
        plots show what it finished (loss.png also the curve of the piece it stopped in, dashed and
        labelled unfinished: `curves.curves_figure`). Failing to draw a plot is logged, not raised: the stop's own
        exception is the one to report. A second Ctrl-C or SIGTERM meanwhile is dropped
        (`errors.stops_deferred`): the run is stopping already, and one cutting the first
        `import matplotlib` short would leave every plot undrawn."""
        if not self.writer:
            return
        with stops_deferred(deliver=False):
            report.write_json(self.path / "results.json", results)
            for write in self._report(results):
                try:
                    write()
                except Exception as exc:  # noqa: BLE001 - see above
                    log.warning("could not update the report of %s: %s", self.path, exc)

    def _report(self, results: dict) -> list:
        """Writers of table.md, layers.png and loss.png, in that order (`finish`, `write_stopped`)."""
        return [lambda: self._write_table(results), lambda: plots.plot_layers(results, self.path / "layers.png"),
                lambda: curves.plot_curves(self.path, self.path / "loss.png", results)]

    def finish(self, results: dict) -> None:
        """Write table.md, layers.png and loss.png, drop the checkpoints of finished strategies (each
        went as its strategy finished, `drop_checkpoint`, unless a kill came between), and only then
        results.json with how the run ended.

        results.json comes last so that it never says "complete" while the folder still lacks its
        plots or holds checkpoints: a run killed (or failing) before that write leaves it saying
        "running", which a rerun of the same command takes over and finishes.

        Ctrl-C and SIGTERM wait until this is done (`errors.stops_deferred`: a few seconds of
        plotting, every result already in): one that cut the first `import matplotlib` short left a
        half-imported module, so `write_stopped` could draw no plot either. The stop then ends the
        run as any other ("interrupted"), its folder whole.
        """
        if not self.writer:
            return
        with stops_deferred():
            for write in self._report(results):
                write()
            for name in results["strategies"]:
                self.drop_checkpoint(name)
            with suppress(OSError):  # still holds an unfinished strategy's checkpoint
                (self.path / "checkpoints").rmdir()
            report.write_json(self.path / "results.json", results)


def _listing(names: list[str], most: int = 3, sep: str = ", ", more: str = " and") -> str:
    """`a, b, c and 4 more`: the first `most` entries for a one-line message. One entry past
    `most` is shown, not counted: "and 1 more" would take the space it hides."""
    if len(names) <= most + 1:
        return sep.join(names)
    return sep.join(names[:most]) + f"{more} {len(names) - most} more"


def fault_point(name: str) -> None:
    """Die here, as a killed process would, when $OLFT_KILL_AT names this point.

    Lets the tests kill a run at an exact place (mid-selection, mid-training) instead of racing
    a timer; with the variable unset it costs one dictionary lookup.
    """
    import os
    import signal

    if os.environ.get("OLFT_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
