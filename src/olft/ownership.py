"""What in a run folder is olft's, and whose run it holds.

The names olft writes (`OWN_FILES`, `OWN_FOLDERS`, the lock's files), the desktop's files it
ignores (`OS_METADATA`), the tracker folder config.json vouches for, and so which entries are
someone else's (`foreign_entries`: what --overwrite refuses to leave behind). Then the folder's
config.json (`saved_config`) against this run's: the fields that differ (`config_differences`),
and whether its run stopped before any work, so another config may take the folder over
(`never_started`). `olft.runfolder.RunFolder` acts on these answers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from olft import runlock
from olft.config import PATH_FIELDS, TrainConfig, strategy_lr_text
from olft.layerspec import METHOD_STRATEGIES

# The strategies --strategy-lr sets the rate of (selection's trained candidates train at olft's);
# explicit layers (layers=...) train at --lr.
RATED = METHOD_STRATEGIES

# Fields that do not change what a run computes; they may differ on resume. How the work is spread
# (processes, --selection-parallel, --device-map, checkpointing) is one of them, and how often the
# training state is saved (--checkpoint-every: a checkpoint resumes to the weights of a run never
# stopped, and one left by the earlier run is resumed whatever this run's value).
IGNORED_ON_RESUME = {"out", "strategies", "selection_parallel", "device_map", "gradient_checkpointing", "report_to",
                     "checkpoint_every"}


# What olft did before these fields existed, where that differs from today's default.
OLDER = {"selection.selector": "exhaustive", "selection.selection_adaptive": 0}


def _defaults() -> dict[str, Any]:
    from olft.config import RunConfig

    return {k: v for k, v in _flatten(RunConfig().to_dict()).items() if k != "data.glue_dir"}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _same_path(old, new) -> bool:
    """Whether two values of a path option name the same place: a folder written before paths
    were stored absolute holds them as typed, relative to where that run began (taken to be here)."""
    return isinstance(old, str) and isinstance(new, str) and os.path.abspath(old) == os.path.abspath(new)


def _unread(a: dict[str, Any], b: dict[str, Any], selects: bool) -> set[str]:
    """The keys of flat configs `a` (the folder's) and `b` (this run's) that this run does not read,
    so a difference in them changes nothing it computes: the selection section when it selects no
    layer (`olft train`, --strategies without olft), the epochs where both configs set a step count
    instead (--max-steps, --selection-steps), and each `APPLIES` option that the choice of both
    configs (their --selector, their --method) leaves unused (--probe-keep under auto, the LoRA rank
    of an adapter run). `config.ignored_options` names the same options as ignored. (--strategy-lr is
    compared and kept per strategy: `rate_differences`, `kept_rates`.)"""
    from olft.config import APPLIES

    out = set() if selects else {k for k in set(a) | set(b) if k.startswith("selection.")}
    # An option another replaces in both configs (`config._overridden`): a step count sets how long
    # training runs, so the epochs beside it are never read; the warning that names them as ignored
    # says to drop one, and a rerun that does must still continue the folder.
    for key, by in (("train.epochs", "train.max_steps"), ("selection.selection_epochs", "selection.selection_steps")):
        if a.get(by) and b.get(by):
            out.add(key)
    for key, (choice, users, _) in APPLIES.items():
        chosen = f"{key.split('.')[0]}.{choice}"
        if a.get(chosen) not in users and b.get(chosen) not in users:
            out.add(key)
    return out


def kept_config(old: dict, new: dict, selects: bool = True, trains: Collection[str] = RATED,
                held: Collection[str] = ()) -> dict:
    """`new` (this run's config) with the folder's values (`old`) of the options this run does not
    read (`_unread`), and the folder's rates of the strategies it does not train (`trains`: those of
    `RATED` it trains; `held`: those the folder holds work of; `kept_rates`): config.json keeps
    recording the run its finished pieces came from, so adding a piece never rewrites what the
    folder's own run was. A copy; neither argument changes."""
    a, b = {**_defaults(), **OLDER, **_flatten(old)}, _flatten(new)
    out = json.loads(json.dumps(new))
    for key in _unread(a, b, selects):
        if key in a:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = a[key]
    out.setdefault("train", {})["strategy_lr"] = kept_rates(old, new, trains, held)
    return out


def _train(config: dict) -> TrainConfig:
    """The rates of `config` (a saved or this run's config dict), for `TrainConfig` to resolve."""
    train = config.get("train") or {}
    default = TrainConfig()
    return TrainConfig(lr=train.get("lr", default.lr), strategy_lr=train.get("strategy_lr"))


def kept_rates(old: dict, new: dict, trains: Collection[str] = RATED, held: Collection[str] = ()) -> str | None:
    """The --strategy-lr a folder's config.json records once this run (config `new`) adds to it
    (config `old`): this run's rates for the strategies of `RATED` it trains (`trains`), the folder's
    for the others, which this run does not read (their work, if any, trained at the folder's): its
    --strategy-lr entries, and the rate of each strategy of `held` (those the folder holds work of)
    that trained at the folder's --lr where this run's --lr differs, so `TrainConfig.lr_for` still
    resolves each piece to the rate it trained at. Either config's own text where that is all of
    it, as typed (this run's first)."""
    a, b = _train(old).lr_by_strategy(), _train(new).lr_by_strategy()
    folder, lr = _train(old), _train(new).lr
    kept = {**{s: folder.lr_for(s) for s in held if s in RATED and folder.lr_for(s) != lr}, **a}
    merged = {s: (b if s in trains else kept)[s] for s in RATED if s in (b if s in trains else kept)}
    for rates, config in ((b, new), (a, old)):
        if merged == rates:
            return (config.get("train") or {}).get("strategy_lr")
    return strategy_lr_text(merged)


def rate_differences(old: dict, new: dict, rates: Collection[str] = RATED, whole_lr: bool = True) -> dict[str, tuple[float, float]]:
    """{strategy: (the folder's peak learning rate, this run's)} for each strategy of `rates` whose
    rate differs between the folder's config (`old`) and this run's (`new`), each as
    `TrainConfig.lr_for` resolves it from --lr and --strategy-lr (the effective rate, however set).
    Where --lr is compared as a whole (`whole_lr`: the folder holds explicit layers' work, which
    trains at it), a strategy that trains at --lr in both is left out: its difference is --lr's
    (`train.lr`)."""
    a, b = _train(old), _train(new)
    named = set(a.lr_by_strategy()) | set(b.lr_by_strategy()) if whole_lr else set(RATED)
    return {s: (a.lr_for(s), b.lr_for(s)) for s in RATED if s in rates and s in named and a.lr_for(s) != b.lr_for(s)}


def resuming_rates(old: dict, new: dict, rates: Collection[str] = RATED, whole_lr: bool = True) -> str:
    """The --strategy-lr with which this run (config `new`) continues the folder (config `old`):
    its own rates, those of `rate_differences` replaced by the folder's."""
    own = _train(new).lr_by_strategy()
    folder = {s: old_rate for s, (old_rate, _) in rate_differences(old, new, rates, whole_lr).items()}
    rates = {**own, **folder}
    return strategy_lr_text({s: rates[s] for s in RATED if s in rates}) or "''"


def config_differences(old: dict, new: dict, selects: bool = True, rates: Collection[str] = RATED,
                       whole_lr: bool = True) -> list[str]:
    """'key: old in the folder, new now' for each option whose value differs between the folder's
    config (`old`) and this run's (`new`), those that may differ on resume (`IGNORED_ON_RESUME`) and
    those this run does not read (`_unread`; `selects`: whether it selects a layer) aside; and
    "<strategy>'s learning rate: old in the folder, new now" for each strategy of `rates` whose
    effective rate (--lr, or its --strategy-lr entry) differs (`rate_differences`): --strategy-lr
    is compared per strategy, not as a whole; so is --lr (`train.lr`) unless `whole_lr`.
    `RunFolder` passes `selects` False where the folder holds no selection work (`FolderWork.selects`),
    as `rates` the strategies this run trains that the folder holds work of (`FolderWork.rated`): a rate
    nothing finished trained at may change; and `whole_lr` only where the folder holds explicit
    layers' work (`FolderWork.layers`), which trains at --lr itself and records no rate of its own."""
    diffs = [f"{key}: {was!r} in the folder, {now!r} now" for key, was, now in _option_differences(old, new, selects, whole_lr)]
    for name, (was, now) in rate_differences(old, new, rates, whole_lr).items():
        diffs.append(f"{name}'s learning rate: {was} in the folder, which its {name} work trained at, {now} now")
    return diffs


def _option_differences(old: dict, new: dict, selects: bool, whole_lr: bool) -> list[tuple[str, Any, Any]]:
    """(key, the folder's value, this run's) of each option `config_differences` names, rates aside;
    "<unset>" for a value one config lacks."""
    a, b = _flatten(old), _flatten(new)
    a = {**_defaults(), **OLDER, **a}  # a field an older olft did not write counts as what it did
    unread = _unread(a, b, selects) | {"train.strategy_lr"}  # compared per strategy (`rate_differences`)
    if not whole_lr:
        unread.add("train.lr")  # each held strategy's rate is compared, however it is set
    out = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[-1] in IGNORED_ON_RESUME or key in IGNORED_ON_RESUME or key in unread:
            continue
        if key in PATH_FIELDS and _same_path(a.get(key), b.get(key)):
            continue
        if key == "data.task" and _same_task(a.get(key), b.get(key)):  # "SST-2" an older olft kept as typed, "sst2" now
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append((key, a.get(key, "<unset>"), b.get(key, "<unset>")))
    return out


def _same_task(a: Any, b: Any) -> bool:
    """Whether two task names are spellings of one task (`tasks.get_task`)."""
    from olft.errors import OlftError
    from olft.tasks import get_task

    try:
        return get_task(a).name == get_task(b).name
    except OlftError:
        return False


def resuming_options(old: dict, new: dict, selects: bool = True, whole_lr: bool = True) -> str:
    """The flags, with the folder's values, of the options (rates aside: `resuming_rates`) that
    `config_differences` finds differ between the folder's config (`old`) and this run's (`new`),
    as a command line takes them ("--selector probe --max-steps 2", "--no-cache", "--probe-keep
    null"): what a refused run adds to continue the folder. An option this run's config lacks
    is left out."""
    flags = []
    for key, was, _ in _option_differences(old, new, selects, whole_lr):
        if was == "<unset>":
            continue
        flag = "--" + key.split(".")[-1].replace("_", "-")
        if isinstance(was, bool):
            flags.append(flag if was else f"--no-{flag[2:]}")
        else:
            flags.append(f"{flag} {'null' if was is None else shlex.quote(str(was))}")
    return " ".join(flags)


# What olft writes in a run folder: these top-level files, and in each subfolder files with these endings.
LOCK_FILES = {runlock.LOCK_FILE, runlock.HOLDER_FILE}


OWN_FILES = {"config.json", "results.json", "table.md", "layers.png", "loss.png", *LOCK_FILES}


OWN_FOLDERS = {"pieces": (".json",), "weights": (".safetensors",), "checkpoints": (".pt",), "curves": (".csv",)}


# Files a desktop or notebook drops in any folder it shows (Finder, Explorer, KDE, Jupyter): they are
# neither olft's nor the user's work, so they neither block a new --out nor get deleted by --overwrite.
OS_METADATA = {".DS_Store", "Thumbs.db", "desktop.ini", ".directory", ".ipynb_checkpoints"}


def is_own(entry: Path, folder: str | None = None) -> bool:
    """Whether `entry` is a file olft writes (at the top of a run folder, or in subfolder `folder`)."""
    if entry.is_symlink() or not entry.is_file():
        return False
    name = entry.name
    # A temporary file a run killed mid-write left: olft.atomic's ".<stem>.tmp<pid><suffix>"
    # (".results.tmp123.json", ".layers.tmp7.png", ".full.tmp9.pt"), or the writability probe.
    temp = re.fullmatch(r"\.(.+)\.tmp\d+(\.[^.]+)", name)
    if temp:
        name = temp.group(1) + temp.group(2)
    return name == ".write-test" or (name.endswith(OWN_FOLDERS[folder]) if folder else name in OWN_FILES)


def work_files(path: Path, folder: str, pattern: str = "*") -> list[Path]:
    """The whole files of olft's in subfolder `folder` of run folder `path` (matching `pattern`):
    finished work, not a temporary file a kill left mid-write (".final.tmp9.pt": a dot name, which
    pathlib's glob matches too)."""
    return [e for e in sorted((Path(path) / folder).glob(pattern)) if not e.name.startswith(".") and is_own(e, folder)]


def tracker_folder(path: Path) -> str | None:
    """The subfolder --report-to's tracker writes in run folder `path`, as its config.json records
    (None: no tracker, or no config.json of olft's)."""
    from olft.curves import TRACKER_FOLDERS

    train = (saved_config(path) or {}).get("train") or {}
    return TRACKER_FOLDERS.get(train.get("report_to"))


def is_tracker_folder(entry: Path, tracker: str | None) -> bool:
    return tracker is not None and entry.name == tracker and entry.is_dir() and not entry.is_symlink()


def is_os_metadata(entry: Path) -> bool:
    """Whether `entry` is a file a desktop leaves in folders it shows (`OS_METADATA`, or macOS's
    "._<name>" AppleDouble files), ignored when olft decides whether a folder is its own."""
    return entry.name in OS_METADATA or entry.name.startswith("._")


def foreign_entries(path: Path) -> list[str]:
    """Entries of run folder `path` that olft does not write, as paths relative to it (desktop
    metadata such as .DS_Store left out: see `is_os_metadata`)."""
    out = []
    tracker = tracker_folder(path)
    for entry in sorted(Path(path).iterdir()):
        if is_os_metadata(entry):
            continue
        if is_tracker_folder(entry, tracker):
            continue  # all of it the tracker's
        if entry.name in OWN_FOLDERS and entry.is_dir() and not entry.is_symlink():
            out += [f"{entry.name}/{e.name}" for e in sorted(entry.iterdir()) if not (is_own(e, entry.name) or is_os_metadata(e))]
        elif not is_own(entry):
            out.append(entry.name)
    return out


def never_started(path: Path) -> bool:
    """Whether run folder `path` holds only what `RunFolder.start` writes before any work: config.json,
    the lock and empty subfolders (a run that stopped there, say on an input refused too late).

    Such a folder holds no finished work, so a run with another config may take it over instead of
    refusing it; anything more (results.json, a piece, weights, a checkpoint, the user's files) and
    it may not.
    """
    for entry in Path(path).iterdir():
        if is_os_metadata(entry) or (entry.name in LOCK_FILES | {"config.json"} and not entry.is_dir()):
            continue
        is_sub = entry.name in OWN_FOLDERS and entry.is_dir() and not entry.is_symlink()
        if not (is_sub and all(is_os_metadata(e) for e in entry.iterdir())):
            return False
    return True


# Pieces that record no training: a proxy's (the probe's fit, the gradient score at initialisation)
# and the selection's own record, whose trained candidates (if any) leave pieces of their own.
UNTRAINED_PIECES = ("probe", "gradient", "selection")

FIXED = ("layers", "final", "full")  # the strategies whose layers are fixed: neither selects


@dataclass(frozen=True)
class FolderWork:
    """The strategies a run folder holds work of, or a run of (`folder_work`), read once: each
    that results.json names or holds, and each with a piece or checkpoint; "olft" for a selection,
    and for any piece or checkpoint that is not a fixed-layer strategy's (`FIXED`: a candidate's,
    the probe's, the selection's). A fixed-layer strategy's piece or checkpoint gives its file name
    (layers=0+3's is "layers-0_3"). `trained`: those whose work trained, so not by a selection's
    record nor a proxy's piece alone (`UNTRAINED_PIECES`)."""

    held: frozenset[str]
    trained: frozenset[str]

    @property
    def selects(self) -> bool:
        """Whether the folder holds selection work, or a run that selected: a selection (or an olft
        strategy) in results.json, or a piece or checkpoint that is not a fixed-layer strategy's
        (layers=..., final, full). Without any, nothing in it depends on the selection options, so
        a run may change them (`config_differences`' `selects`)."""
        return "olft" in self.held

    @property
    def rated(self) -> set[str]:
        """The strategies of `RATED` whose rate (--lr, or their --strategy-lr entry) the folder's
        work trained at: olft for a trained candidate of a selection (candidates train at olft's
        rate) or any olft work, final and full for theirs. A selection by a proxy alone (--selector
        probe or gradient, auto below 8 candidates) trained nothing, so it holds no rate. Explicit
        layers train at --lr, so a folder of those alone holds none: a run may change any
        strategy's --strategy-lr there, and another strategy's anywhere (`config_differences`' `rates`)."""
        return set(self.trained) & set(RATED)

    @property
    def layers(self) -> bool:
        """Whether the folder holds work of explicit layers (layers=..., `olft train`), which trains
        at --lr and records no rate of its own: there --lr is compared as a whole
        (`config_differences`' `whole_lr`)."""
        return any(name.startswith("layers") for name in self.held)


def folder_work(path: Path) -> FolderWork:
    """What run folder `path` holds work of (`FolderWork`), from one read of its results.json,
    pieces and checkpoints; an unreadable results.json counts as none."""
    try:
        results = json.loads((Path(path) / "results.json").read_text())
    except (OSError, ValueError):
        results = {}
    held: set[str] = set()
    if isinstance(results, dict):
        for key in ("strategy_names", "strategies"):
            if isinstance(results.get(key), (list, dict)):
                held |= {n for n in results[key] if isinstance(n, str)}
    trained = set(held)
    if isinstance(results, dict) and results.get("selection"):
        held.add("olft")
    for entry in work_files(path, "pieces", "*.json"):
        kind, _, name = entry.stem.partition("-")
        name = name if kind in ("strategy", "failed") and name.startswith(FIXED) else "olft"
        held.add(name)
        if kind not in UNTRAINED_PIECES:
            trained.add(name)
    checkpoints = {e.stem if e.stem.startswith(FIXED) else "olft" for e in work_files(path, "checkpoints", "*.pt")}
    return FolderWork(frozenset(held | checkpoints), frozenset(trained | checkpoints))


def saved_config(path: Path) -> dict | None:
    """The config.json in `path` if olft wrote it (a dict holding olft's config sections), else None."""
    from olft.config import SECTIONS

    try:
        data = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and all(isinstance(data.get(s), dict) for s in SECTIONS) else None
