"""The library's entry points: `run`, `select_layer`, `info`.

`run` is the whole method: select a layer among the candidates, tune it on the full train
split, and run the baselines, writing one run folder (see `runfolder`). Each finished piece is
saved the moment it finishes; running the same command again continues where it stopped.
"""

from __future__ import annotations

import logging
import signal
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from olft import distributed, report
from olft.config import RunConfig
from olft.errors import OlftError
from olft.pipeline import Session
from olft.runfolder import RunFolder
from olft.select import Candidate, Strategy, middle_bucket, parse_candidates, parse_strategies
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
        "eval_examples": {s: len(e) for s, e in session.eval_enc.items()},
        "truncated_examples": session.truncated,
        "max_length": session.max_length,
        "middle_bucket": middle_bucket(session.num_layers),
        "all_layer_peft_params": session.param_counts(list(range(session.num_layers))),
        "selection": None,
        "strategies": {},
        "failed": {},
        "distributed": distributed.describe(session.dist, cfg),
        **report.environment(),
    }


@contextmanager
def _stop_on_sigterm():
    """SIGTERM (what schedulers send) stops the run like Ctrl-C: cleanly, folder resumable."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(cfg: RunConfig, quiet: bool = False, strategies: list[Strategy] | None = None, overwrite: bool = False) -> dict:
    """Select, tune and compare; write (or continue) the run folder; return the results dict.

    Under `accelerate launch` / `torchrun` every process runs this; rank 0 alone writes the folder.
    """
    writer = distributed.context(cfg.train.mixed_precision).is_main
    folder = RunFolder(Path(cfg.out) if cfg.out else default_out(cfg), cfg.to_dict(), overwrite, writer)
    session = Session(cfg, quiet=quiet)
    strategies = strategies or parse_strategies(cfg.strategies, session.num_layers)
    parse_candidates(cfg.selection.candidates, session.num_layers)  # validate before writing anything
    folder.start()
    results = _header(cfg, session)
    results["strategy_names"] = [s.name for s in strategies]
    folder.write_results(results)
    with _stop_on_sigterm():
        try:
            for strat in strategies:
                _run_strategy(session, folder, results, strat)
        except KeyboardInterrupt:
            results["status"] = "interrupted"
            folder.write_results(results)
            log.warning("interrupted: %s is incomplete; rerun the same command to continue", folder.path)
            raise
    results["complete"] = not results["failed"]
    results["status"] = "complete" if results["complete"] else "finished with failures"
    folder.finish(results)
    log.info("results in %s", folder.path)
    return results


def _run_strategy(session: Session, folder: RunFolder, results: dict, strat: Strategy) -> None:
    cfg = session.cfg
    layers = list(strat.layers)
    if strat.name == "olft":
        selection = _select(session, folder, results)
        layers = [selection.selected_layer]
    done = session.dist.broadcast(_finished_strategy(folder, strat.name) if folder.writer else None)
    if done is not None:
        results["strategies"][strat.name] = done
        log.info("%-10s already finished (kept from the run folder)", strat.name)
        return
    try:
        r = session.tune(
            layers, session.train_enc, session.eval_enc, epochs=cfg.train.epochs, max_steps=cfg.train.max_steps,
            desc=strat.name, checkpoint=folder.checkpoint_path(strat.name),
        )  # fmt: skip
    except NonFiniteLoss as exc:
        log.error("%s failed: %s", strat.name, exc)
        results["failed"][strat.name] = {"layers": layers, "error": str(exc)}
        folder.write_results(results)
        return
    entry = r.to_dict()
    entry["peft_params_percent_of_all_layers"] = 100 * r.peft_params / results["all_layer_peft_params"]
    meta = {"strategy": strat.name, "layers": ",".join(map(str, r.layers)), "method": results["method"]}
    if folder.writer:
        report.save_weights(folder.weights_path(strat.name), r.weights, meta)
    folder.save_piece("strategy", strat.name, entry)
    results["strategies"][strat.name] = entry
    folder.write_results(results)
    log.info(
        "%-10s layers=%s %s=%.4f train=%.1fs peft_params=%d",
        strat.name, _short(r.layers), results["metric"], r.score, r.train_seconds, r.peft_params,
    )  # fmt: skip


def _finished_strategy(folder: RunFolder, name: str) -> dict | None:
    """The saved piece of a strategy whose weights are also saved, else None."""
    done = folder.load_piece("strategy", name)
    return done if done is not None and folder.weights_path(name).is_file() else None


def _select(session: Session, folder: RunFolder, results: dict):
    # Rank 0 reads what is finished and tells the others, so all agree even without a shared disk.
    # Pieces are named layer-steps: halving and adaptive stages train a layer at several budgets.
    done = {}
    if folder.writer:
        for name in folder.piece_names("candidate"):
            piece = folder.load_piece("candidate", name)
            if piece is not None and piece.get("steps") is not None:
                c = Candidate(**piece)
                done[(c.layer, c.steps)] = c
    done = session.dist.broadcast(done)

    def finished(c: Candidate) -> None:
        folder.save_piece("candidate", f"{c.layer}-{c.steps}", asdict(c))
        _log_candidate(c, results["metric"])

    t0 = time.perf_counter()
    selection = session.select(on_candidate=finished, done=done)
    results["selection"] = selection.to_dict()
    results["distributed"]["selection_wall"] = {"seconds": time.perf_counter() - t0}
    folder.write_results(results)
    confidence = selection.confidence
    log.info("selected layer %d (%s selector, %s protocol; %s)", selection.selected_layer, selection.selector,
             selection.protocol, "one finalist" if confidence is None else f"{confidence:.1f} SE ahead of the runner-up")
    s = session.cfg.selection
    if selection.flat:
        log.warning(
            "Every candidate ranked the same on the %d scoring examples, so layer %d was chosen by the tie-break "
            "(lowest layer), not by a signal. Give selection more data or steps (--selection-train-samples, now %d; "
            "--selection-steps, now %s).", selection.score_examples, selection.selected_layer, s.selection_train_samples,
            s.selection_steps,
        )  # fmt: skip
    elif len(selection.equivalent) > 1:
        trained = selection.rounds and selection.rounds[-1]["stage"] == "train"
        log.warning(
            "Layers %s are equivalent within %.1f standard errors of held-out loss: layer %d leads, but not by more than "
            "the noise of %d scoring examples (more --selection-eval-samples%s may separate them).",
            selection.equivalent, selection.threshold, selection.selected_layer, selection.score_examples,
            " or --selection-adaptive" if trained else ", or tuning them with --selector exhaustive,",
        )  # fmt: skip
    return selection


def _short(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 4 else f"{layers[0]}..{layers[-1]} ({len(layers)})"


def _log_candidate(c: Candidate, metric: str) -> None:
    if c.score is None:
        log.info("candidate layer %2d: failed (%s) in %.1fs", c.layer, c.error, c.seconds)
    else:
        loss = c.metrics.get("loss")
        log.info("candidate layer %2d (%s steps): %s=%.4f%s in %.1fs", c.layer, c.steps, metric, c.score,
                 "" if loss is None else f" loss={loss:.4f}", c.seconds)  # fmt: skip


def select_layer(cfg: RunConfig, quiet: bool = False, overwrite: bool = False) -> dict:
    """Only the selection stage: candidates scored, winner named (written to the run folder)."""
    writer = distributed.context(cfg.train.mixed_precision).is_main
    folder = RunFolder(Path(cfg.out) if cfg.out else default_out(cfg), cfg.to_dict(), overwrite, writer)
    session = Session(cfg, quiet=quiet)
    parse_candidates(cfg.selection.candidates, session.num_layers)
    folder.start()
    results = _header(cfg, session)
    results["strategy_names"] = []
    with _stop_on_sigterm():
        _select(session, folder, results)
    results["complete"], results["status"] = True, "complete"
    folder.finish(results)
    return results


def info(cfg: RunConfig) -> dict:
    """Family, layers, middle bucket and PEFT parameter counts of a model (no data needed)."""
    from olft.backbone import count_params
    from olft.loading import load_stack
    from olft.methods import METHODS, apply_method

    stack, _ = load_stack(cfg.model.model, 2, cfg.model.gguf_file, cfg.model.dtype, cfg.model.attn_implementation)
    n = stack.num_layers

    def peft(method_cfg, layers: list[int]) -> tuple[int, int]:
        applied = apply_method(stack, layers, method_cfg)
        counts = applied.num_params, applied.train_only_params
        applied.remove()
        return counts

    per_method = {}
    for name in METHODS:
        method_cfg = replace(cfg.method, method=name)
        (one, one_train), (every, _) = peft(method_cfg, [n // 2]), peft(method_cfg, list(range(n)))
        per_method[name] = {"one_layer": one, "all_layers": every, "one_layer_percent_of_all": 100 * one / every}
        if one_train:
            per_method[name]["one_layer_while_training"] = one_train
    chosen = per_method[cfg.method.method]
    return {
        "model": cfg.model.model,
        "family": stack.family.name,
        "num_layers": n,
        "hidden_size": stack.hidden_size,
        "middle_bucket": middle_bucket(n),
        "base_params": count_params(stack.base),
        "params_per_layer": count_params(stack.layers[0]),
        "method": cfg.method.method,
        "peft_params_one_layer": chosen["one_layer"],
        "peft_params_all_layers": chosen["all_layers"],
        "one_layer_percent_of_all": chosen["one_layer_percent_of_all"],
        "methods": per_method,
        "head_params_binary": count_params(stack.head),
    }


__all__ = ["run", "select_layer", "info", "OlftError"]
