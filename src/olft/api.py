"""The library's entry points: `run`, `select_layer`, `info`; each writes or returns results.

`run` is the whole method: select a layer among the candidates, tune it on the full train
split, and run the baselines, writing one folder with config, results, tables, plot and weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from olft import report, tasks
from olft.config import RunConfig
from olft.errors import OlftError
from olft.pipeline import Session
from olft.select import Strategy, middle_bucket, parse_strategies

log = logging.getLogger(__name__)


def default_out(cfg: RunConfig) -> Path:
    model = Path(cfg.model.model).name.replace(".gguf", "")
    return Path("runs") / f"{model}-{cfg.data.task}-{cfg.method.method}"


def prepare_out(out: Path) -> Path:
    """Create the run folder, refusing paths that cannot hold one."""
    if out.exists() and not out.is_dir():
        raise OlftError(f"Output path {out} is a file, not a folder. Pass --out with a folder path.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "weights").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OlftError(f"Cannot write to output folder {out}: {exc.strerror}. Pass --out with a writable folder.") from exc
    return out


def _header(cfg: RunConfig, session: Session) -> dict:
    return {
        "complete": False,
        "model": cfg.model.model,
        "family": session.stack.family.name,
        "num_layers": session.num_layers,
        "task": session.task.name,
        "metric": session.task.metric,
        "eval_splits": list(session.eval_enc),
        "method": cfg.method.method,
        "method_config": cfg.method.__dict__,
        "seed": cfg.train.seed,
        "frozen_prefix_cache": cfg.train.cache,
        "frozen_dropout": "off below the lowest tuned layer",
        "train_examples": len(session.train_enc),
        "eval_examples": {s: len(e) for s, e in session.eval_enc.items()},
        "truncated_examples": session.truncated,
        "max_length": session.max_length,
        "middle_bucket": middle_bucket(session.num_layers),
        "all_layer_peft_params": session.param_counts(list(range(session.num_layers))),
        "selection": None,
        "strategies": {},
        **report.environment(),
    }


def _finish_strategy(out: Path, results: dict, name: str, r, session: Session) -> None:
    entry = r.to_dict()
    entry["peft_params_percent_of_all_layers"] = 100 * r.peft_params / results["all_layer_peft_params"]
    results["strategies"][name] = entry
    meta = {"strategy": name, "layers": ",".join(map(str, r.layers)), "method": results["method"]}
    report.save_weights(out / "weights" / f"{name}.safetensors", r.weights, meta)
    report.write_json(out / "results.json", results)
    log.info(
        "%-10s layers=%s %s=%.4f train=%.1fs peft_params=%d",
        name, _short(r.layers), results["metric"], r.score, r.train_seconds, r.peft_params,
    )  # fmt: skip


def _short(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 4 else f"{layers[0]}..{layers[-1]} ({len(layers)})"


def run(cfg: RunConfig, quiet: bool = False, strategies: list[Strategy] | None = None) -> dict:
    """Select, tune and compare; write the run folder; return the results dict."""
    out = prepare_out(Path(cfg.out) if cfg.out else default_out(cfg))
    session = Session(cfg, quiet=quiet)
    strategies = strategies or parse_strategies(cfg.strategies, session.num_layers)
    for stale in ("results.json", "table.md", "layers.png"):
        (out / stale).unlink(missing_ok=True)
    report.write_json(out / "config.json", cfg.to_dict())
    results = _header(cfg, session)
    results["strategy_names"] = [s.name for s in strategies]
    report.write_json(out / "results.json", results)
    t = cfg.train
    for strat in strategies:
        layers = list(strat.layers)
        if strat.name == "olft":
            selection = session.select(on_candidate=lambda c: _log_candidate(c, results["metric"]))
            results["selection"] = selection.to_dict()
            report.write_json(out / "results.json", results)
            layers = [selection.selected_layer]
            log.info("selected layer %d (%s protocol)", layers[0], selection.protocol)
        r = session.tune(layers, session.train_enc, session.eval_enc, epochs=t.epochs, max_steps=t.max_steps, desc=strat.name)
        _finish_strategy(out, results, strat.name, r, session)
    results["complete"] = True
    report.write_json(out / "results.json", results)
    report.atomic_write(out / "table.md", report.table_md(results))
    report.plot_layers(results, out / "layers.png")
    log.info("results in %s", out)
    return results


def _log_candidate(c, metric: str) -> None:
    if c.score is None:
        log.info("candidate layer %2d: failed (%s) in %.1fs", c.layer, c.error, c.seconds)
    else:
        log.info("candidate layer %2d: %s=%.4f in %.1fs", c.layer, metric, c.score, c.seconds)


def select_layer(cfg: RunConfig, quiet: bool = False) -> dict:
    """Only the selection stage: candidates scored, winner named (written to the run folder)."""
    out = prepare_out(Path(cfg.out) if cfg.out else default_out(cfg))
    session = Session(cfg, quiet=quiet)
    report.write_json(out / "config.json", cfg.to_dict())
    results = _header(cfg, session)
    selection = session.select(on_candidate=lambda c: _log_candidate(c, results["metric"]))
    results["selection"] = selection.to_dict()
    results["complete"] = True
    report.write_json(out / "results.json", results)
    report.atomic_write(out / "table.md", report.table_md(results))
    report.plot_layers(results, out / "layers.png")
    return results


def info(cfg: RunConfig) -> dict:
    """Family, layers, middle bucket and PEFT parameter counts of a model (no data needed)."""
    from olft.backbone import count_params
    from olft.loading import load_stack
    from olft.methods import apply_method

    stack, _ = load_stack(cfg.model.model, 2, cfg.model.gguf_file, cfg.model.dtype, cfg.model.attn_implementation)
    n = stack.num_layers

    def peft(layers: list[int]) -> int:
        applied = apply_method(stack, layers, cfg.method)
        count = applied.num_params
        applied.remove()
        return count

    one, every = peft([n // 2]), peft(list(range(n)))
    return {
        "model": cfg.model.model,
        "family": stack.family.name,
        "num_layers": n,
        "hidden_size": stack.hidden_size,
        "middle_bucket": middle_bucket(n),
        "base_params": count_params(stack.base),
        "params_per_layer": count_params(stack.layers[0]),
        "method": cfg.method.method,
        "peft_params_one_layer": one,
        "peft_params_all_layers": every,
        "one_layer_percent_of_all": 100 * one / every,
        "head_params_binary": count_params(stack.head),
    }


def clear_out(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


__all__ = ["run", "select_layer", "info", "tasks"]
