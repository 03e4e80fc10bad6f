"""The library's entry points: `run`, `select_layer`, `info`.

`run` is the whole method: select a layer among the candidates, tune it on the full train
split, and run the baselines, writing one run folder (see `runfolder`). Each finished piece is
saved the moment it finishes; running the same command again continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import difflib
import errno
import logging
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from olft import curves, distributed, report
from olft.config import (
    SECTIONS,
    SELECT_RATED,
    RunConfig,
    check_selection_metric,
    count_ignored_options,
    given_options,
    ignored_options,
    option_keys,
    strategy_name,
)
from olft.errors import OlftError, stop_on_sigterm
from olft.layerspec import Strategy, check_candidates, middle_bucket, parse_strategies
from olft.methods import check_method
from olft.pipeline import Session
from olft.runfolder import RunFolder, fault_point
from olft.runselection import selected_layer
from olft.stages import check_probe_classes, check_selection_data
from olft.train import NonFiniteLoss

log = logging.getLogger(__name__)


def default_out(cfg: RunConfig) -> Path:
    model = Path(cfg.model.model).name.replace(".gguf", "")
    return Path("runs") / f"{model}-{cfg.data.task}-{cfg.method.method}"


def _header(cfg: RunConfig, session: Session) -> dict:
    return {
        "complete": False,
        "status": "running",
        "model": cfg.model.model,
        "family": session.stack.family.name,
        "pooling": {"rule": session.stack.pooling, "from": session.stack.pooling_source},
        "model_inputs": ["input_ids", "attention_mask", *session.stack.model_inputs],
        "num_layers": session.num_layers,
        "task": session.task.name,
        "metric": session.task.metric,
        "eval_splits": list(session.eval_enc),
        "method": cfg.method.method,
        "method_config": asdict(cfg.method),
        "seed": cfg.train.seed,
        "frozen_prefix_cache": cfg.train.cache,
        "frozen_dropout": "off in the embeddings and the layers below the lowest tuned layer",
        "train_examples": len(session.train_enc),
        "data_sha256": session.data_sha256,  # per split: its examples' texts and labels (`data.fingerprint`)
        "eval_examples": {s: len(e) for s, e in session.eval_enc.items()},
        "truncated": session.truncated,  # per split: examples that lost tokens, per text
        "max_length": session.max_length,
        "middle_bucket": middle_bucket(session.num_layers),
        "all_layer_peft_params": session.param_counts(list(range(session.num_layers))),
        "selection": None,
        "strategies": {},
        "failed": {},
        "distributed": distributed.describe(session.dist, cfg),
        **report.environment(),
    }


def _recorded_and_given(cfg: RunConfig) -> tuple[RunConfig, RunConfig]:
    """(the config as config.json records it, the session's): the first with every local path
    absolute, so the run continues from any directory; the second reads the same files by the
    names typed, so that a data error names its file as the user did (`olft predict` names its
    --input so). The model's path is absolute in both: a folder named like an alias is that
    folder once absolute, and the session loads what config.json names."""
    return cfg.with_absolute_paths(), cfg.with_absolute_paths(("model.model",))


def _open(cfg: RunConfig, overwrite: bool, selects: bool = True,
          rates: Iterable[str] = ("olft", "final", "full")) -> RunFolder:
    """The run folder, checked against `cfg`; `selects`: whether this run selects a layer (else the
    folder's selection options may differ from `cfg`'s, which nothing reads: `ownership._unread`);
    `rates`: which of olft, final, full it trains (the rates of the others may differ likewise, and
    theirs only where the folder holds no work trained at them: `RunFolder._check`)."""
    writer = distributed.context(cfg.train.mixed_precision, cfg.model.dtype).is_main
    if cfg.train.report_to:
        curves.check_tracker(cfg.train.report_to)  # before any work
    return RunFolder(Path(cfg.out) if cfg.out else default_out(cfg), cfg.to_dict(), overwrite, writer, selects, rates)


def _keep_folder_values(folder: RunFolder, *cfgs: RunConfig) -> None:
    """Give each of `cfgs` the folder's values of the method and selection options this run does not
    read (`RunFolder.config` keeps them: `ownership.kept_config`), so what the run records (results.json's
    method_config, a selection it finishes) says what config.json says. Nothing else can differ there."""
    for cfg in cfgs:
        for section in ("method", "selection"):
            for name, value in (folder.config.get(section) or {}).items():
                if hasattr(getattr(cfg, section), name):
                    setattr(getattr(cfg, section), name, value)


def config_layers(cfg: RunConfig, config: object | None = None) -> int | None:
    """The model's layer count from its config alone (no weights load): `config`, the transformers
    config where the caller has read it, else `cfg`'s model's; None for a config that declares none
    (the loaded model then tells)."""
    from olft.loading import config_num_layers, read_config

    return config_num_layers(config if config is not None else read_config(cfg.model.model, cfg.model.gguf_file)[0])


def _check_layers(cfg: RunConfig, check_strategies: bool, selects: bool) -> int | None:
    """Refuse layers the model does not have (--strategies, --layers, and --candidates where the run
    `selects` a layer: elsewhere nothing reads them), and an adapter --reduction-factor above the
    model's width, from its config alone, before data is read or weights load; OlftError naming
    the valid range.

    Returns the model's layer count, or None for a config that declares none: the check is then
    left to the loaded model (`run` repeats it).
    """
    from olft.loading import read_config
    from olft.methods.adapter import bottleneck_size

    config = read_config(cfg.model.model, cfg.model.gguf_file)[0]  # once: a GGUF's or a hub id's is not free
    width = getattr(config, "hidden_size", None)  # n_embd, d_model, ... through transformers' attribute_map
    if cfg.method.method == "adapter" and isinstance(width, int):  # the loaded stack's is checked again (`check_method`)
        bottleneck_size(width, cfg.method.reduction_factor)
    n = config_layers(cfg, config)
    if n is None:
        return None
    if check_strategies:
        parse_strategies(cfg.strategies, n)
    if selects:
        check_candidates(cfg.selection.candidates, n, cfg.selection.selector, cfg.selection.probe_keep)
    return n


def _warn_ignored(cfg: RunConfig, given: Iterable[str] | Mapping[str, str | None] | None, command: str) -> set[str] | dict:
    """Log one warning per option of `given` that `cfg` leaves unused under `command` (run or
    select: `config.ignored_options`), before anything loads; return `given` as a set (a mapping
    as a dict), for `_warn_count_ignored` once the candidates are counted. `given` None means a
    Python caller's settings: every option that differs from RunConfig's default
    (`config.given_options`). A mapping {key: how to name it} names each as its value (the CLI's
    "run.yaml: selection.selector" for a config file's option; None: the flag).
    OlftError for a `given` that is one string (it would be read letter by letter) or names an
    option RunConfig does not have (its warnings would be lost)."""
    if isinstance(given, str):
        raise OlftError(f"given takes the grouped keys of the options set, e.g. given=[{given!r}], not one string.")
    if given is not None and not isinstance(given, Iterable):
        raise OlftError(f"given takes the grouped keys of the options set (e.g. given=['train.lr']), or None, not {given!r}.")
    given = given_options(cfg) if given is None else dict(given) if isinstance(given, Mapping) else set(given)
    known = option_keys() | {f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS}
    unknown = sorted(k for k in given if k not in known)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), sorted(known), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else " Keys are grouped as RunConfig.to_dict() gives them, e.g. 'train.lr'."
        raise OlftError(f"given names {unknown[0]!r}, which is no option of RunConfig.{hint}")
    for line in ignored_options(cfg, given, command):
        log.warning(line)
    return given


def _validation_size(session: Session, cfg: RunConfig) -> tuple[str, int, int | None] | None:
    """(name, examples, --max-eval-samples) of the evaluation split --selection-data validation scores
    candidates on (the first, as `SelectionMixin.selection_sets` takes it), for `check_selection_data`;
    None under --selection-data train."""
    if cfg.selection.selection_data != "validation":
        return None
    first = next(iter(session.eval_enc))
    return first, len(session.eval_enc[first]), cfg.data.max_eval_samples


def _warn_count_ignored(cfg: RunConfig, given: set[str] | dict, num_layers: int) -> None:
    """Log the warnings on the options of `given` that the candidates of a `num_layers`-layer model
    leave unused (`config.count_ignored_options`): every selection option with one candidate, under
    any selector; the training options where --selector auto runs the probe alone. The caller
    calls it once, where the run selects a layer."""
    count = len(check_candidates(cfg.selection.candidates, num_layers, cfg.selection.selector, cfg.selection.probe_keep))
    for line in count_ignored_options(cfg, given, count):
        log.warning(line)


def _check_strategy_lr(cfg: RunConfig, names: list[str], what: str, typed: bool = True,
                       fix: str = "drop it or add the strategy") -> None:
    """Check --strategy-lr against `names`, the strategies this command runs (as `parse_strategies`
    names them): rates for strategies it does not run are ignored with one warning naming them (a
    file reused with fewer --strategies), but when none of the named strategies runs the flag would
    do nothing, and OlftError says so, with `fix` (the caller's: `olft select` has no --strategies
    to add one to). Only where the user set it (`typed`): a run folder's
    config.json records its run's rates, and an add-on reusing it (`olft train`, fewer --strategies)
    leaves them unused in silence, as it does that file's other options (`cli._given`)."""
    if not typed:
        return
    rates = cfg.train.lr_by_strategy()
    unused = sorted(set(rates) - set(names))
    if rates and len(unused) == len(rates):
        if not set(names) & {"olft", "final", "full"}:  # "add the strategy" is no fix for `olft train`
            raise OlftError(f"--strategy-lr (train.strategy_lr) names {', '.join(unused)}, which {what} does not run: explicit layers "
                            "(olft train --layers, --strategies layers=...) train at --lr, so use --lr instead, or drop "
                            "it (--strategy-lr '' clears one a config file sets).")
        raise OlftError(f"--strategy-lr (train.strategy_lr) names {', '.join(unused)}, which {what} does not run: {fix}.")
    if unused:
        # named both ways: the rates may come from a config file's strategy_lr as well as the flag
        log.warning("--strategy-lr (train.strategy_lr): ignoring the rate of %s, which %s does not run", ", ".join(unused), what)


def _begin(folder: RunFolder, cfg: RunConfig, session: Session, requested: list[str]) -> dict:
    """Lock and (re)start the folder once every input is valid; results.json says "running"."""
    folder.start(session.data_sha256)
    folder.record_conditions(session.dist.device, session.dist.world_size)
    folder.requested = requested
    if folder.writer:
        tracker = curves.make_tracker(cfg.train.report_to, folder.path) if cfg.train.report_to else None
        session.curves = curves.Curves(folder.path, tracker)
    results = {**_header(cfg, session), "strategy_names": list(requested)}
    folder.refresh(results)
    folder.write_results(results)
    return results


@contextmanager
def _recorded(folder: RunFolder, results: dict, session: Session):
    """However the work stops, results.json says so: never "running" once this process is done."""
    with stop_on_sigterm():
        try:
            yield
        except (KeyboardInterrupt, BrokenPipeError):
            # A closed output pipe is a stop from outside too (`olft run ... | tee log`, the group killed:
            # tee goes first, and olft's next progress line meets the closed pipe before its own SIGTERM):
            # the folder is as resumable as after Ctrl-C, not stopped by an error of the run's.
            results["status"], results["complete"] = "interrupted", False  # `_end` may have set it before stopping
            log.warning("interrupted: %s is incomplete; rerun the same command to continue", folder.path)
            folder.write_stopped(results)  # table.md and the plots show what finished, marked unfinished
            raise
        except BaseException as exc:
            results["status"], results["error"] = "stopped by an error", f"{type(exc).__name__}: {exc}"
            results["complete"] = False
            try:
                folder.write_stopped(results)
            except OSError as again:  # a full disk fails this write too: the first error is the one to report
                log.warning("could not record the stop in %s: %s", folder.path / "results.json", again)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                # Not a bug of the run's: one line naming the fix, exit 2 as for any unwritable output.
                # Every finished piece was written whole (`atomic`), so the same command continues.
                raise OlftError(f"no space left on the device while writing {exc.filename or folder.path}: free space "
                                f"there (or give --out on another disk), then rerun the same command to continue; "
                                f"finished pieces are kept") from exc
            raise
        finally:
            if session.curves is not None:
                session.curves.finish()


def _end(folder: RunFolder, results: dict) -> dict:
    """Rebuild results from every piece, say how the run ended, write the table and plot.

    "failed" when every strategy this run was asked for failed; "finished with failures" when
    some strategy the folder names did not finish (the CLI exits 1 for either, and the log names
    which failed); "complete" when every strategy the folder names finished and none failed.
    """
    folder.refresh(results)
    requested = folder.requested
    missing = [n for n in results["strategy_names"] if n not in results["strategies"]]
    if requested and all(name in results["failed"] for name in requested):
        results["status"] = "failed"
        log.error("every requested strategy failed (%s); see the errors above", ", ".join(requested))
    elif results["failed"] or missing:
        results["status"] = "finished with failures"
        log.error("%s failed (%s finished); table.md's Failed list says why", ", ".join(missing),
                  ", ".join(results["strategies"]))
    else:
        results["status"] = "complete"
    results["complete"] = results["status"] == "complete"
    folder.finish(results)  # results.json last: "complete" only once the plots are there and the checkpoints gone
    log.info("results in %s", folder.path)
    return results


def _as_config(cfg: Any, what: str) -> RunConfig:
    """`cfg` as a RunConfig: a RunConfig (checked again: `RunConfig.check`), or a mapping of groups
    (`RunConfig.from_dict`). Raises OlftError for a value it refuses, or anything else than those
    two, naming how to make one (a path is not read: the CLI's --config is)."""
    if isinstance(cfg, RunConfig):
        cfg.check()  # its options may have been set after it was made (`cfg.train.lr = "abc"`)
        return cfg
    if isinstance(cfg, Mapping):
        return RunConfig.from_dict(cfg)
    raise OlftError(f"olft.{what} takes a RunConfig (olft.RunConfig(...), or olft.RunConfig.from_dict(mapping) for a "
                    f"config file's or config.json's contents), not {type(cfg).__name__}.")


def run(cfg: RunConfig, quiet: bool = False, strategies: list[Strategy] | None = None, overwrite: bool = False,
        given: Iterable[str] | Mapping[str, str | None] | None = None) -> dict:
    """Select, tune and compare; write (or continue) the run folder; return the results dict.

    `cfg`: a RunConfig, or a mapping of its groups (`RunConfig.from_dict`: `{"model": {"model":
    "minilm-l6"}, "train": {"lr": 1e-3}}`). `strategies`: parsed strategies that replace
    `cfg.strategies` (`olft train` passes its layers=...). `quiet`: no progress bars. `overwrite`:
    clear an existing run folder of olft's first (--overwrite).

    results.json holds every piece the folder holds, including those of earlier runs with other
    --strategies. `status` is "failed" when every strategy asked for failed, "finished with
    failures" when some strategy the folder names failed, else "complete". Raises OlftError on
    bad input, including a method the model cannot take (before the folder is touched), or a
    folder held by another live run.
    Each option of `given` (grouped keys, "method.lora_rank") the run will not use is named in one
    logged warning; None means every option that differs from RunConfig's default, and () none
    (for a config read back from a run folder's config.json, which records every option). A
    mapping {key: name} names each option so (None: its flag), as the CLI names a config file's.
    `cfg.strategies` may be a list of names as well as the comma-separated string config.json holds.
    Under `accelerate launch` / `torchrun` every process runs this; rank 0 alone writes the folder.
    """
    cfg = _as_config(cfg, "run")
    if isinstance(cfg.strategies, (list, tuple)):  # a Python caller's list: the string the CLI and config.json hold
        cfg = replace(cfg, strategies=",".join(map(str, cfg.strategies)))
    names = [s.name for s in strategies] if strategies is not None else [
        strategy_name(s) for s in cfg.strategies.split(",") if s.strip()]  # as parse_strategies names them: all is full
    rates = [n for n in names if n in ("olft", "final", "full")]  # explicit layers train at --lr: --strategy-lr sets only these
    given = _warn_ignored(cfg, given, "run")
    typed_lr = "train.strategy_lr" in given
    if "olft" in names:  # only a selection ranks (a folder an older olft wrote with the pair still reads)
        check_selection_metric(cfg.selection)
    cfg, typed = _recorded_and_given(cfg)
    n = _check_layers(cfg, check_strategies=strategies is None, selects="olft" in names)
    # explicit layers alone: `olft train --layers` as often as --strategies layers=..., so neither flag is named
    explicit = all(n.startswith("layers=") for n in names)
    what = f"--strategies {cfg.strategies}" if strategies is None and not explicit else f"this run ({', '.join(names)})"
    early = strategies if strategies is not None else parse_strategies(cfg.strategies, n) if n is not None else None
    if early is not None:  # before the model and data load
        _check_strategy_lr(cfg, [s.name for s in early], what, typed_lr)
        _warn_same_layers(early, n)
    if n is not None and any(s.name == "olft" for s in early):
        _warn_count_ignored(cfg, given, n)
    with _open(cfg, overwrite, selects="olft" in names, rates=rates) as folder:
        _keep_folder_values(folder, cfg, typed)
        session = Session(typed, quiet=quiet)
        check_method(session.stack, cfg.method)  # a method the model cannot take leaves no folder behind
        strategies = strategies or parse_strategies(cfg.strategies, session.num_layers)
        if any(s.name == "olft" for s in strategies):  # before anything trains: baselines would train for nothing
            candidates = check_candidates(cfg.selection.candidates, session.num_layers, cfg.selection.selector,
                                          cfg.selection.probe_keep)
            check_selection_data(cfg.selection, len(session.train_examples), len(candidates), cfg.data.max_train_samples,
                                 _validation_size(session, cfg))
            check_probe_classes(session, len(candidates))
            _warn_final_candidate(cfg, session.num_layers, candidates, [s.name for s in strategies])
        if early is None:  # the model's config declares no layer count: checked once it has loaded
            _check_strategy_lr(cfg, [s.name for s in strategies], what, typed_lr)
            _warn_same_layers(strategies, session.num_layers)
        if n is None and any(s.name == "olft" for s in strategies):
            _warn_count_ignored(cfg, given, session.num_layers)
        if cfg.method.method == "lora" and session.dist.is_main:  # the formats only LoRA runs could have
            why = _export_formats(session.stack, "lora").get("no_transformers_form")
            if why:
                log.info("note: %s: `olft export` will offer --format olft only (not peft or merged); "
                         "olft predict and olft evaluate read the run as usual.", why)
        results = _begin(folder, cfg, session, [s.name for s in strategies])
        with _recorded(folder, results, session):  # finishing too: a failure there is recorded, not "complete"
            for strat in strategies:
                _run_strategy(session, folder, results, strat)
            return _end(folder, results)


def _warn_same_layers(strategies: list[Strategy], num_layers: int) -> None:
    """Strategies that name one layer set on this model (final and layers=3 on 4 layers; final and
    full on one) each train it: said once per set, as the run would spend the time twice."""
    named: dict[tuple[int, ...], list[str]] = {}
    for s in strategies:
        if s.layers:  # olft's layer is chosen later
            named.setdefault(s.layers, []).append(s.name)
    for layers, names in named.items():
        if len(names) > 1:
            log.warning("%s tune the same layer%s (%s) on this %d-layer model: the run trains %s %d times; drop all "
                        "but one", " and ".join(names), "s" * (len(layers) > 1), "+".join(map(str, layers)), num_layers,
                        "them" if len(layers) > 1 else "it", len(names))


def _warn_final_candidate(cfg: RunConfig, num_layers: int, candidates: list[int], names: list[str]) -> None:
    """A model under 3 layers has no middle third apart from its ends: the default candidates are then
    every layer, the final one too, and OLFT picking it equals the final-layer baseline (a 1-layer
    model's olft, final and full are one layer). Said once, as the comparison reads as three results."""
    if cfg.selection.candidates == "middle" and num_layers - 1 in candidates and {"final", "full"} & set(names):
        log.warning("a %d-layer model's middle third is every layer (%s), the final one too: OLFT can choose it and "
                    "then equals the final-layer baseline%s; the comparison needs a model of 3 layers or more",
                    num_layers, ",".join(map(str, candidates)), ", and with one layer all-layer tuning as well" if num_layers == 1 else "")


def _run_strategy(session: Session, folder: RunFolder, results: dict, strat: Strategy) -> None:
    cfg = session.cfg
    layers = list(strat.layers)
    if strat.name == "olft":
        try:
            layers = [selected_layer(session, folder, results)]
        except OlftError as exc:  # every candidate failed: the other strategies still run
            sel = results.get("selection")
            if sel and sel.get("status") == "unfinished":  # its candidates as `refresh` listed them: none chose
                results["selection"] = {**sel, "status": "failed"}  # kept by `refresh`, read as no choice
            _failed(folder, results, strat.name, [], exc)
            return
    done = session.dist.broadcast(_finished_strategy(folder, strat.name) if folder.writer else None)
    if done is not None:
        results["strategies"][strat.name] = done
        folder.drop_checkpoint(strat.name)  # left by a run killed between the piece and its removal
        log.info("%-10s already finished (kept from the run folder)", strat.name)
        return
    try:
        r = session.tune(
            layers, session.train_enc, session.eval_enc, epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
            desc=strat.name, checkpoint=folder.checkpoint_path(strat.name), lr=cfg.train.lr_for(strat.name),
            rate_from=cfg.train.rate_from(strat.name),
        )  # fmt: skip
    except NonFiniteLoss as exc:
        _failed(folder, results, strat.name, layers, exc)
        return
    entry = r.to_dict()
    for split, label in r.one_class.items():  # explicit layers (layers=...) train at --lr, not a --strategy-lr rate
        rate = f"--lr / --strategy-lr {strat.name}=..." if strat.name in ("olft", "final", "full") else "--lr"
        log.warning("%s A lower learning rate (%s) or more steps usually cures it.",
                    report.collapsed_text(strat.name, label, split), rate)
    entry["peft_params_percent_of_all_layers"] = 100 * r.peft_params / results["all_layer_peft_params"]
    meta = {"strategy": strat.name, "layers": ",".join(map(str, r.layers)), "method": results["method"]}
    if folder.writer:
        report.save_weights(folder.weights_path(strat.name), r.weights, meta)
    folder.save_piece("strategy", strat.name, entry)
    folder.drop_piece("failed", strat.name)
    fault_point(f"{strat.name}:saved")
    folder.drop_checkpoint(strat.name)  # weights and piece saved: a rerun skips the strategy, never resumes it
    results["strategies"][strat.name] = entry
    results["failed"].pop(strat.name, None)
    folder.refresh(results)
    folder.write_results(results)
    where = "" if strat.name.startswith("layers=") else f"layers={_short(r.layers)} "  # explicit layers: the name says them
    log.info("%-10s %s%s=%.4f train=%.1fs peft_params=%d", strat.name, where, results["metric"], r.score, r.train_seconds,
             r.peft_params)  # fmt: skip


def _failed(folder: RunFolder, results: dict, name: str, layers: list[int], exc: Exception) -> None:
    """Record a strategy that could not finish; a rerun tries it again."""
    log.error("%s failed: %s", name, exc)
    entry = {"layers": layers, "error": str(exc)}
    folder.save_piece("failed", name, entry)
    results["failed"][name] = entry
    folder.refresh(results)
    folder.write_results(results)


def _finished_strategy(folder: RunFolder, name: str) -> dict | None:
    """The saved piece of a strategy whose weights are also saved, else None."""
    done = folder.load_piece("strategy", name)
    return done if done is not None and folder.weights_path(name).is_file() else None


def _short(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 4 else f"{layers[0]}..{layers[-1]} ({len(layers)})"


def select_layer(cfg: RunConfig, quiet: bool = False, overwrite: bool = False,
                 given: Iterable[str] | Mapping[str, str | None] | None = None) -> dict:
    """Only the selection stage: candidates scored, winner named (written to the run folder).
    `cfg`: a RunConfig or a mapping of its groups, as `run` takes.

    Returns the results dict, as the folder's results.json holds it (the folder's other finished
    pieces stay in it, so `strategies` is {} unless an earlier run tuned some). Its `selection`:
    `selected_layer` (the chosen layer, an index from 0), `ranking` (the candidate layers, best
    first), `candidates` (per layer: `layer`, `score` (the task metric, or a proxy's own score),
    `metrics` (held-out `loss` among them, but under the gradient selector), `steps` (0 for a proxy), `seconds`), `confidence` (the
    runner-up's held-out loss above the winner's, in standard errors of their paired difference;
    None where unmeasured or without signal), `equivalent` (the layers within noise of the winner),
    `selector`, `protocol`, `rounds` (each stage's own scores), `no_signal`, `seconds`; with one
    candidate layer, that layer, no candidates and `note` "one candidate: nothing to choose"
    (docs/selection.md lists every key). Beside it: `status`, `metric`, `num_layers`, `middle_bucket`.
    `olft.run(cfg)` with the same `cfg` (or `olft run --config FOLDER/config.json`) goes on to tune
    the selected layer, keeping this selection.

    Each option of `given` the selection will not use is named in one logged warning, as by `run`
    (None: those that differ from RunConfig's default). Raises OlftError on bad input, or when
    every candidate failed to train.
    """
    cfg = _as_config(cfg, "select_layer")
    given = _warn_ignored(cfg, given, "select")
    check_selection_metric(cfg.selection)
    cfg, typed = _recorded_and_given(cfg)
    n = _check_layers(cfg, check_strategies=False, selects=True)
    _check_strategy_lr(cfg, ["olft"], SELECT_RATED, "train.strategy_lr" in given,
                       fix="drop it, or give olft's rate (--strategy-lr olft=...), the one its candidates train at")
    if n is not None:
        _warn_count_ignored(cfg, given, n)
    with _open(cfg, overwrite, rates=("olft",)) as folder:  # its candidates train at olft's rate
        _keep_folder_values(folder, cfg, typed)
        session = Session(typed, quiet=quiet)
        check_method(session.stack, cfg.method)
        candidates = check_candidates(cfg.selection.candidates, session.num_layers, cfg.selection.selector, cfg.selection.probe_keep)
        check_selection_data(cfg.selection, len(session.train_examples), len(candidates), cfg.data.max_train_samples,
                             _validation_size(session, cfg))
        check_probe_classes(session, len(candidates))
        if n is None:  # the model's config declares no layer count: warned once it has loaded
            _warn_count_ignored(cfg, given, session.num_layers)
        results = _begin(folder, cfg, session, [])
        with _recorded(folder, results, session):
            selected_layer(session, folder, results)
            return _end(folder, results)


def info(cfg: RunConfig) -> dict:
    """What olft discovered in a model and what each method would cost on it (no data needed).
    `cfg`: a RunConfig or a mapping of its groups, as `run` takes.

    Family structure (layer list, embeddings, final norm, pooler, attention and the projections
    the adapter follows, LoRA targets, pooling and where it came from), layers, middle bucket,
    and PEFT parameter counts per method on one layer and on all layers. Raises OlftError for a
    model olft cannot load or run.
    """
    cfg = _as_config(cfg, "info")
    from olft.backbone import count_params
    from olft.loading import load_stack
    from olft.methods import METHODS, apply_method

    m = cfg.model
    stack, _ = load_stack(m.model, 2, m.gguf_file, m.dtype, m.attn_implementation, pooling=m.pooling)
    n = stack.num_layers

    def peft(method_cfg, layers: list[int]) -> tuple[int, int]:
        applied = apply_method(stack, layers, method_cfg)
        counts = applied.num_params, applied.train_only_params
        applied.remove()
        return counts

    per_method: dict[str, dict] = {}
    for name in METHODS:
        method_cfg = replace(cfg.method, method=name)
        try:
            (one, one_train), (every, _) = peft(method_cfg, [n // 2]), peft(method_cfg, list(range(n)))
        except OlftError as exc:  # e.g. prefix tuning on attention that bypasses transformers' interface
            per_method[name] = {"unavailable": str(exc)}
            continue
        per_method[name] = {"one_layer": one, "all_layers": every, "one_layer_percent_of_all": 100 * one / every}
        if one_train:
            per_method[name]["one_layer_while_training"] = one_train
    chosen = per_method[cfg.method.method]
    if "unavailable" in chosen:
        raise OlftError(chosen["unavailable"])
    middle = stack.layer_path(n // 2)
    return {
        "model": cfg.model.model,
        "family": stack.family.name,
        "structure": stack.family.describe(),
        "adapter_after": [f"{middle}.{stack.family.attn_out}", f"{middle}.{stack.family.mlp_out}"],
        "pooling": {"rule": stack.pooling, "from": stack.pooling_source},
        "model_inputs": ["input_ids", "attention_mask", *stack.model_inputs],
        "num_layers": n,
        "hidden_size": stack.hidden_size,
        "middle_bucket": middle_bucket(n),
        "base_params": count_params(stack.base),
        "params_per_layer": [count_params(layer) for layer in stack.layers],
        "method": cfg.method.method,
        "peft_params_one_layer": chosen["one_layer"],
        "peft_params_all_layers": chosen["all_layers"],
        "one_layer_percent_of_all": chosen["one_layer_percent_of_all"],
        "methods": per_method,
        "head_params_binary": count_params(stack.head),
        **_export_formats(stack, cfg.method.method),
    }


def _export_formats(stack, method: str) -> dict:
    """{"export_formats": what `olft export --format` a `method` run's folder will offer, and
    "no_transformers_form": why not peft/merged, where the family's classification class
    refuses them}, from the loaded model's config alone (`hfmodel.no_transformers_form`), so a
    user knows before training."""
    from olft.hfmodel import no_transformers_form

    why = no_transformers_form(stack.base.config)
    formats = ["peft", "merged", "olft"] if method == "lora" and why is None else ["olft"]
    return {"export_formats": formats, **({"no_transformers_form": why} if why else {})}


__all__ = ["run", "select_layer", "info", "OlftError"]
