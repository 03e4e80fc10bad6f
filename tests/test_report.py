"""table.md's Table 2: wall and CPU minutes side by side, time % on one stated basis (CPU seconds
when every strategy recorded them, else wall), and OLFT's whole-run cost on the same basis."""

from __future__ import annotations

import json
import re

import pytest

from olft.report import table_md
from olft.tasks import Scores


def _results(cpu: dict[str, float] | None, selection_cpu: float | None = 12.0) -> dict:
    """A finished run's results.json: wall seconds olft 60, final 30, full 120; selection 30 s wall."""
    wall = {"olft": 60.0, "final": 30.0, "full": 120.0}
    layers = {"olft": [1], "final": [3], "full": [0, 1, 2, 3]}
    strategies = {}
    for name, seconds in wall.items():
        s = {"layers": layers[name], "metrics": {"validation": {"accuracy": 0.5}}, "score": 0.5,
             "train_seconds": seconds, "peft_params": 100 * len(layers[name])}
        if cpu and name in cpu:
            s["train_cpu_seconds"] = cpu[name]
        strategies[name] = s
    selection = {"protocol": "train-holdout", "selector": "probe", "train_examples": 8, "score_examples": 8,
                 "selected_layer": 1, "seconds": 30.0, "candidates": [{"layer": 1, "score": 0.5, "seconds": 30.0}]}
    if selection_cpu is not None:
        selection["cpu_seconds"] = selection_cpu
    return {"model": "m", "task": "rte", "metric": "accuracy", "method": "adapter", "eval_splits": ["validation"],
            "num_layers": 4, "all_layer_peft_params": 400, "strategies": strategies, "selection": selection}


def _row(table: str, name: str) -> list[str]:
    """Table 2's cells of strategy `name` (Table 1's rows have three cells, Table 2's seven)."""
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith(f"| {name} |")]
    return [c.strip() for c in next(r for r in rows if len(r) == 7)]


def test_time_percent_is_of_cpu_seconds_when_every_strategy_recorded_them():
    table = table_md(_results({"olft": 30.0, "final": 20.0, "full": 100.0}))
    assert "| strategy | wall (min) | CPU (min) | time % (CPU) |" in table and "time % is of CPU time." in table
    assert _row(table, "olft")[:4] == ["olft", "1.00", "0.50", "30.0"]  # wall 60 s, CPU 30 s of full's 100
    assert _row(table, "final")[:4] == ["final", "0.50", "0.33", "20.0"]
    assert _row(table, "full")[:4] == ["full", "2.00", "1.67", "100.0"]
    # Selection 12 CPU s + OLFT's 30 over all-layer's 100, not the wall figure (30 + 60) / 120 = 75 %.
    assert re.search(r"OLFT's whole run \(selection 0\.20 min \+ its training 0\.50 min, CPU time\) = 42\.0 %", table)
    assert "0.50 min wall, 0.20 min CPU (not included" in table


def test_older_results_without_cpu_seconds_fall_back_to_wall_and_say_so():
    table = table_md(_results({"olft": 30.0, "full": 100.0}, selection_cpu=None))  # final has none
    assert "| time % (wall) |" in table and "time % is of wall time (not every strategy recorded CPU time)." in table
    assert _row(table, "olft")[:4] == ["olft", "1.00", "0.50", "50.0"]
    assert _row(table, "final")[:4] == ["final", "0.50", "-", "25.0"]
    assert "(selection 0.50 min + its training 1.00 min, wall time) = 75.0 %" in table
    assert "0.50 min wall (not included" in table


def test_whole_run_on_wall_time_when_only_the_selection_lacks_cpu_seconds():
    table = table_md(_results({"olft": 30.0, "final": 20.0, "full": 100.0}, selection_cpu=None))
    assert _row(table, "olft")[3] == "30.0"  # the strategies still compare on CPU time
    assert "(selection 0.50 min + its training 1.00 min, wall time; this selection recorded no CPU time) = 75.0 %" in table


def test_no_whole_run_line_without_all_layer_tuning():
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    del results["strategies"]["full"]
    table = table_md(results)
    assert "whole run" not in table and _row(table, "olft")[3] == "-"


def test_a_selection_only_folder_has_no_empty_tables(tmp_path):
    results = _results({})
    results["strategies"] = {}
    table = table_md(results, tmp_path / "my run")
    assert "Table 1" not in table and "Table 2" not in table and "| strategy |" not in table, table
    quoted = f"'{tmp_path.resolve()}/my run'"
    # Made by `olft select` or by `olft.select_layer` (nothing in the folder says which): both ways to go on.
    py = repr(f"{tmp_path.resolve()}/my run")
    python = (f"from Python, `import json, pathlib, olft; cfg = olft.RunConfig.from_dict(json.loads(pathlib.Path({py[:-1]}/config.json').read_text())); "
              f"cfg.out = {py}; {{}}(cfg, given=())` does the same")
    assert (f"Selection only (`olft select` / `olft.select_layer`): no layer was tuned. `olft run --config {quoted}/config.json "
            f"--out {quoted}` continues this folder to tuning, keeping this selection; {python.format('olft.run')}.") in table
    # Stopped while selecting: the banner and the selection's own line name the command and the call.
    from olft.select import unfinished_entry

    stopped = {**results, "status": "interrupted", "strategy_names": [],
               "selection": unfinished_entry([{"layer": 1, "steps": 4, "score": 0.5}], {"selector": "exhaustive"})}
    banner = table_md(stopped, tmp_path / "my run")
    command = f"olft select --config {quoted}/config.json --out {quoted}"
    assert f"`{command}` continues the folder, keeping them; {python.format('olft.select_layer')}." in banner, banner
    assert f"`{command}` continues it, keeping them; {python.format('olft.select_layer')}." in banner, banner
    assert "Selection (train-holdout): 1 candidate," in table and "| layer |" in table
    assert "OLFT's train time above" not in table  # there is none above


def test_an_unfinished_selection_whose_candidates_all_failed_reads_as_failed_once_its_run_ended(tmp_path):
    """The review's --lr 1e37 run: its two candidates diverged at step 2 of 4, and results.json keeps
    the selection as `unfinished_entry`. Once the run ended the selection reads as failed, with each
    error and no continue advice; while interrupted it reads as unfinished, the failed ones' errors
    listed, never "(4 steps)" for a candidate that failed at step 2."""
    from olft.selectionmd import REPEATS

    err = "Training diverged: the loss became NaN or infinite at step 2. Lower the learning rate (now 1e+37, try --lr 0.001)."
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results["selection"] = {"status": "unfinished", "protocol": "train-holdout", "selector": "exhaustive", "metric": "score",
                            "candidates": [{"layer": k, "score": None, "seconds": 1.0, "metrics": {}, "error": err, "steps": 4}
                                           for k in (2, 3)], "selected_layer": None}  # fmt: skip
    results.update(status="failed", strategies={}, strategy_names=["olft"],
                   failed={"olft": {"layers": [], "error": "Every candidate layer failed to train; see the errors above."}})
    table = table_md(results, tmp_path)
    assert ("Selection failed (exhaustive selector, train-holdout): every candidate failed to train, so no layer was "
            f"selected:\n\n- layer 2: {err}\n- layer 3: {err}\n\n{REPEATS}") in table, table
    assert "- olft: its selection failed (below: every candidate failed to train)." in table
    assert "4 steps" not in table and "continues" not in table and "UNFINISHED" not in table
    results["status"] = "interrupted"
    table = table_md(results, tmp_path)
    assert "2 candidates finished (accuracy x100): layer 2 failed; layer 3 failed. `olft run" in table, table
    assert f"Failed:\n\n- layer 2: {err}\n- layer 3: {err}\n\n{REPEATS}" in table and "4 steps" not in table


def test_a_run_whose_strategies_all_failed_has_scores_but_no_cost_table():
    results = _results({})
    results["strategies"], results["failed"] = {}, {"olft": {"layers": [], "error": "x"}, "final": {"layers": [3], "error": "x"}}
    table = table_md(results)
    assert "| olft |  | failed |" in table and "| final | 3 | failed |" in table
    assert "Table 2" not in table and "Selection only" not in table


def test_table_md_of_olft_select_names_the_command_that_continues_it(model_dirs, tiny_glue, tmp_path, monkeypatch):
    """The command table.md names tunes the folder and keeps its selection."""
    import shlex

    from olft.cli import main

    out = tmp_path / "sel"
    args = ["--model", str(model_dirs["bert"]), "--task", "rte", "--glue-dir", str(tiny_glue), "--candidates", "1,2",
            "--epochs", "1", "--selection-train-samples", "16", "--selection-eval-samples", "8", "-q"]  # fmt: skip
    assert main(["select", *args, "--out", str(out)]) == 0
    before = json.loads((out / "results.json").read_text())["selection"]
    command = re.search(r"`(olft run [^`]+)`", (out / "table.md").read_text()).group(1)
    monkeypatch.chdir(tmp_path.parent)  # the command works from any directory
    assert main([*shlex.split(command)[1:], "--strategies", "olft", "-q"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["selection"] == before and results["strategies"]["olft"]["layers"] == [before["selected_layer"]]
    assert "Table 1" in (out / "table.md").read_text()


def test_cpu_time_counts_the_training_splits_cache_not_the_evaluation_splits(model_dirs, tiny_glue, tmp_path, monkeypatch):
    """As wall time does: evaluation's caches speed up evaluation, which no strategy's time includes."""
    import time

    import olft.pipeline
    from olft.cli import main

    clock = {"offset": 0.0}  # CPU seconds the evaluation splits' cache build is made to cost
    build = olft.pipeline.Session.build_caches

    def costly_eval_caches(self, layer, encs):
        if "train" not in encs:
            clock["offset"] += 1000.0
        return build(self, layer, encs)

    monkeypatch.setattr(olft.pipeline.Session, "build_caches", costly_eval_caches)
    fake = type(time)("fake_time")
    fake.perf_counter, fake.process_time = time.perf_counter, lambda: time.process_time() + clock["offset"]
    monkeypatch.setattr(olft.pipeline, "time", fake)
    out = tmp_path / "run"
    args = ["train", "--layers", "2", "--model", str(model_dirs["llama"]), "--task", "rte", "--glue-dir", str(tiny_glue),
            "--epochs", "1", "--out", str(out), "-q"]  # fmt: skip
    assert main(args) == 0
    assert clock["offset"] == 1000.0  # the evaluation splits' cache was built, inside the timed span
    (entry,) = json.loads((out / "results.json").read_text())["strategies"].values()
    assert 0 < entry["train_cpu_seconds"] < 1000.0


def test_a_strategy_predicting_one_class_is_flagged(model_dirs, tiny_glue, tmp_path, monkeypatch, caplog):
    """A model collapsed to a constant scores the class's share; results and the log say so."""
    import json
    import logging

    import numpy as np

    from olft import pipeline
    from olft.cli import main

    def constant(stack, enc, *args, logits=False, **kwargs):
        return np.tile([0.0, 1.0], (len(enc), 1)) if logits else np.ones(len(enc), dtype=np.int64)

    monkeypatch.setattr(pipeline, "predict", constant)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue),
                     "--layers", "1", "--epochs", "1", "--batch-size", "8", "--max-train-samples", "16",
                     "--max-eval-samples", "12", "-q", "--out", str(out)]) == 0
    entry = json.loads((out / "results.json").read_text())["strategies"]["layers=1"]
    assert entry["one_class"] == {"validation": "positive"}
    assert "layers=1 predicts 'positive' for every validation example" in caplog.text
    assert "its score measures that constant answer" in caplog.text  # true of F1 and MCC too, not only accuracy
    assert "A lower learning rate (--lr) or more steps" in caplog.text  # explicit layers train at --lr
    # On a few examples one answer for all is no evidence of a collapse.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--model", str(model_dirs["bert"]), "--task", "sst2", "--glue-dir", str(tiny_glue),
                     "--layers", "1", "--epochs", "1", "--batch-size", "8", "--max-train-samples", "16",
                     "--max-eval-samples", "4", "-q", "--out", str(tmp_path / "few")]) == 0
    assert json.loads((tmp_path / "few" / "results.json").read_text())["strategies"]["layers=1"]["one_class"] == {}
    assert "predicts 'positive'" not in caplog.text


def test_weight_files_are_the_same_bytes_whatever_the_metadata_order(tmp_path):
    import torch
    from safetensors import safe_open

    from olft.report import save_weights

    weights = {"b.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(3)}
    meta = [("strategy", "olft"), ("layers", "3"), ("method", "adapter"), ("a", "1"), ("z", "2")]
    for i in range(8):  # safetensors' own order is its hash map's: it differs between saves
        save_weights(tmp_path / f"{i}.safetensors", weights, dict(meta[i % 5:] + meta[: i % 5]))
    assert len({(tmp_path / f"{i}.safetensors").read_bytes() for i in range(8)}) == 1
    (tmp_path / "0.safetensors").rename(tmp_path / "x.safetensors")
    with safe_open(tmp_path / "x.safetensors", "pt") as f:
        assert f.metadata() == dict(meta)
        assert torch.equal(f.get_tensor("b.weight"), weights["b.weight"])


# -- the selection's report: probe scores apart from trained scores; one verdict; collapsed strategies -------------


def _probe_halving(trained: dict[int, float], probed: dict[int, float], selected: int, equivalent: list[int]) -> dict:
    """A finished probe-halving run: `probed` layers scored by the probe only (steps 0, score =
    -held-out loss), `trained` layers tuned for 54 steps (score = accuracy), as results.json has them."""
    cands = [{"layer": layer, "score": -loss, "seconds": 1.0, "steps": 0, "metrics": {"loss": loss, "accuracy": 0.6}}
             for layer, loss in probed.items()]  # fmt: skip
    cands += [{"layer": layer, "score": acc, "seconds": 9.0, "steps": 54, "metrics": {"accuracy": acc, "loss": 0.65}}
              for layer, acc in trained.items()]  # fmt: skip
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results["selection"].update({
        "selector": "probe-halving", "score_examples": 57, "selected_layer": selected, "flat": False,
        "candidates": sorted(cands, key=lambda c: c["layer"]), "equivalent": equivalent, "confidence": 1.2,
        "rounds": [{"stage": "probe", "steps": 0, "layers": sorted({**probed, **trained}), "ranking": [5, 4, 3, 2, 1, 0]},
                   {"stage": "train", "steps": 54, "layers": sorted(trained), "ranking": sorted(trained)}],
    })  # fmt: skip
    results.update({"num_layers": 6, "middle_bucket": [2, 3]})
    return results


def _plotted(ax) -> dict[str, list[int]]:
    """Layers drawn on `ax`: "candidates", "selected", and "reference" (horizontal lines' labels);
    OLFT's marker on its own line (`_olft_marker`) is none of these."""
    drawn = {"candidates": set(), "selected": [], "reference": []}
    for line in ax.get_lines():
        label = line.get_label()
        if label == "_olft layer":
            continue
        if label.startswith(("OLFT", "final layer", "all layers", "constant predictor")):
            drawn["reference"].append(label)
        elif label.startswith("selected"):
            drawn["selected"] += [round(x) for x in line.get_xdata()]
        else:
            drawn["candidates"] |= {round(x) for x in line.get_xdata()}
    return {**drawn, "candidates": sorted(drawn["candidates"])}


def test_layer_plot_keeps_probe_scores_off_the_metric_axis():
    from olft.plots import layers_figure

    results = _probe_halving({3: 0.58, 4: 0.57, 5: 0.54}, {0: 0.645, 1: 0.639, 2: 0.608}, selected=3, equivalent=[3])
    metric_ax, probe_ax = layers_figure(results).axes
    assert metric_ax.get_ylabel() == "accuracy x100" and probe_ax.get_ylabel().startswith("probe score")
    assert _plotted(metric_ax) == {"candidates": [3, 4, 5], "selected": [3], "reference": [
        "OLFT, layer 1 (validation): 50.0 (= final layer = all layers)", "final layer (validation): 50.0", "all layers (validation): 50.0"]}  # fmt: skip
    assert _plotted(probe_ax) == {"candidates": [0, 1, 2], "selected": [], "reference": []}
    assert max(probe_ax.get_ylim()) < 0 < min(metric_ax.get_ylim())  # each axis spans its own scores only

    # With the probe's round scores recorded, its panel shows its whole ranking: the kept layers hollow.
    recorded = _probe_halving({3: 0.58, 4: 0.57, 5: 0.54}, {0: 0.645, 1: 0.639, 2: 0.608}, selected=3, equivalent=[3])
    recorded["selection"]["rounds"][0]["scores"] = {str(k): -0.6 - k / 100 for k in range(6)}
    probe_ax = layers_figure(recorded).axes[1]
    lines = {line.get_label(): [int(x) for x in line.get_xdata()] for line in probe_ax.get_lines()}
    assert lines["pruned: not trained"] == [0, 1, 2] and lines["kept: trained (scores above)"] == [3, 4, 5]
    assert "probe (n=57)" in lines
    recorded["selection"]["selector"] = "gradient"  # no scoring set: its label says what it used
    recorded["selection"]["rounds"] = []
    assert any("(training batches)" in line.get_label() for line in layers_figure(recorded).axes[-1].get_lines())
    # A collapsed baseline's reference line carries the table's dagger.
    recorded["selection"]["selector"] = "probe-halving"
    recorded["strategies"]["full"]["one_class"] = {"validation": "positive"}
    assert "all layers (validation): 50.0 †" in _plotted(layers_figure(recorded).axes[0])["reference"]

    # Plain probe: the star on the probe's axis, with no task-metric lines on it to misread it against.
    results["selection"].update(selector="probe", candidates=[{**c, "score": -0.6 + c["layer"] / 100, "steps": 0}
                                                             for c in results["selection"]["candidates"]])  # fmt: skip
    probe_ax = layers_figure({**results, "selection": {**results["selection"], "selected_layer": 5}}).axes[-1]
    assert probe_ax.get_ylabel().startswith("probe score") and _plotted(probe_ax)["selected"] == [5]
    assert not _plotted(probe_ax)["reference"]


def _olft_marker(ax) -> list[tuple[int, float]]:
    """(layer, score x100) of OLFT's marker on its reference line."""
    return [(int(x), float(y)) for line in ax.get_lines() if line.get_label() == "_olft layer"
            for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)]  # fmt: skip


def test_layer_plot_draws_the_final_scores_when_the_probe_alone_chose():
    """`auto` with few candidates trains none: the probe's panel has the star, and a task-metric panel
    above it still has OLFT's (at its layer), the final-layer and all-layer scores, as README promises."""
    from olft.plots import layers_figure

    results = _probe_halving({}, {0: 0.75, 1: 0.72, 2: 0.74}, selected=1, equivalent=[1])
    results["selection"].update(selector="auto", rounds=[])
    results["strategies"]["final"]["score"] = 0.48
    metric_ax, probe_ax = layers_figure(results).axes
    assert metric_ax.get_ylabel() == "accuracy x100" and probe_ax.get_ylabel().startswith("probe score")
    assert _plotted(metric_ax) == {"candidates": [], "selected": [], "reference": [
        "OLFT, layer 1 (validation): 50.0 (= all layers)", "final layer (validation): 48.0", "all layers (validation): 50.0"]}  # fmt: skip
    assert _olft_marker(metric_ax) == [(1, 50.0)]
    assert _plotted(probe_ax) == {"candidates": [0, 1, 2], "selected": [1], "reference": []}
    # `olft select`: no strategy tuned, no final score: the probe's panel alone.
    (ax,) = layers_figure({**results, "strategies": {}}).axes
    assert ax.get_ylabel().startswith("probe score")


def _budgets(metric: str, steps: dict[int, int], scores: dict[int, float]) -> dict:
    """A finished halving run on `metric`: layer -> steps trained, layer -> selection score."""
    results = _probe_halving(scores, {}, selected=max(scores, key=scores.get), equivalent=[max(scores, key=scores.get)])
    results["metric"] = metric
    results["selection"].update(selector="halving", rounds=[])
    for c in results["selection"]["candidates"]:
        c["steps"] = steps[c["layer"]]
    return results


def test_layer_plot_joins_only_candidates_trained_for_the_same_steps():
    """Halving's early rungs stop sooner: a 4-step score is not on the 16-step scores' line."""
    from olft.plots import layers_figure

    results = _budgets("accuracy", {1: 16, 2: 16, 3: 4, 4: 4}, {1: 0.51, 2: 0.53, 3: 0.49, 4: 0.49})
    (ax,) = layers_figure(results).axes
    steps = {c["layer"]: c["steps"] for c in results["selection"]["candidates"]}
    joined = [[round(x) for x in line.get_xdata()] for line in ax.get_lines() if line.get_linestyle() not in ("None", "")]
    candidates = [layers for layers in joined if set(layers) <= set(steps) and len(layers) > 1]
    assert sorted(candidates) == [[1, 2], [3, 4]], joined
    assert all(len({steps[k] for k in layers}) == 1 for layers in candidates)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["candidates after 16 steps:\nselection score (train-holdout split, n=57, ±1 SE)",
                          "candidates after 4 steps:\nselection score (train-holdout split, n=57, ±1 SE)"]  # fmt: skip


def _series(ax) -> dict[str, dict[int, float]]:
    """Each candidates' series on `ax` by its legend label: layer -> score x100, the points drawn."""
    return {line.get_label(): {round(x): float(y) for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True) if y == y}
            for line in ax.get_lines() if line.get_label().startswith("candidates")}  # fmt: skip


def test_layer_plot_draws_every_rounds_scores_and_joins_only_adjacent_layers():
    """Every training round's scores, one series per steps count, from `rounds` (candidates keep only
    each layer's last round); a layer a round did not score breaks its line rather than being bridged."""
    import math

    from olft.plots import layers_figure

    # exhaustive with a retrain (cola-all): all 6 layers at 6 steps, then 0, 1, 3, 4 at 12 steps.
    results = _budgets("mcc", {0: 12, 1: 12, 2: 6, 3: 12, 4: 12, 5: 6}, {0: 0.01, 1: 0.01, 2: 0.2, 3: 0.05, 4: 0.15, 5: 0.09})
    results["selection"]["rounds"] = [
        {"stage": "train", "steps": 6, "layers": list(range(6)), "scores": {str(k): 0.2 - k / 100 for k in range(6)}},
        {"stage": "train", "steps": 12, "layers": [0, 1, 3, 4], "scores": {"0": 0.01, "1": 0.01, "3": 0.05, "4": 0.15}}]
    (ax,) = layers_figure(results).axes
    series = {label.split(":")[0]: points for label, points in _series(ax).items()}
    assert sorted(series["candidates after 6 steps"]) == [0, 1, 2, 3, 4, 5]
    assert series["candidates after 6 steps"][0] == 20.0  # the round's own score, not a later round's
    assert sorted(series["candidates after 12 steps"]) == [0, 1, 3, 4]
    # Layer 2 was not retrained: the 12-step line breaks there (no segment from 1 to 3).
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("candidates after 12")]
    ys = {round(x): y for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)}  # x dodged off the layer
    assert math.isnan(ys[2])
    # halving (mrpc-halv): both layers at 6 steps, then at 12; candidates hold only the 12-step scores.
    halving = _budgets("f1", {2: 12, 3: 12}, {2: 0.73, 3: 0.75})
    halving["selection"]["rounds"] = [{"stage": "train", "steps": 6, "layers": [2, 3], "scores": {"2": 0.66, "3": 0.64}},
                                      {"stage": "train", "steps": 12, "layers": [2, 3], "scores": {"2": 0.73, "3": 0.75}}]
    (ax,) = layers_figure(halving).axes
    series = {label.split(":")[0]: points for label, points in _series(ax).items()}
    assert series == {"candidates after 12 steps": {2: 73.0, 3: 75.0}, "candidates after 6 steps": {2: 66.0, 3: 64.0}}


def test_layer_plot_legend_keys_the_collapse_dagger():
    """The dagger on a reference line has its key in the legend, in table.md's words."""
    from olft.plots import layers_figure
    from olft.report import collapsed_text

    results = _budgets("mcc", {2: 6, 3: 6}, {2: 0.3, 3: 0.45})
    results["strategies"]["full"]["one_class"] = {"validation": "acceptable"}
    labels = [t.get_text() for t in layers_figure(results).axes[0].get_legend().get_texts()]
    (line,) = [i for i, label in enumerate(labels) if label.startswith("all layers")]
    assert labels[line].endswith(" †")
    key = labels[line + 1]
    assert key.startswith("† ") and key.replace("\n", " ") == f"† {collapsed_text('all layers', 'acceptable', 'validation')}"
    del results["strategies"]["full"]["one_class"]
    assert not any("†" in t.get_text() for t in layers_figure(results).axes[0].get_legend().get_texts())


def test_layer_plot_draws_olfts_line_over_a_baseline_with_its_score():
    """Where OLFT scores what the final layer does, both lines lie at one height: OLFT's is drawn over
    the baseline's (a higher zorder), and its legend label says the two coincide."""
    from olft.plots import layers_figure

    results = _budgets("accuracy", {2: 6, 3: 6}, {2: 0.55, 3: 0.6})
    results["strategies"]["olft"]["layers"] = [3]
    results["strategies"]["final"]["score"] = results["strategies"]["olft"]["score"] = 0.7
    results["strategies"]["full"]["score"] = 0.8
    ax = layers_figure(results).axes[0]
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    assert lines["OLFT, layer 3"].get_zorder() > lines["final layer"].get_zorder()
    assert lines["OLFT, layer 3"].get_ydata()[0] == lines["final layer"].get_ydata()[0] == 70.0
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "OLFT, layer 3 (validation): 70.0 (= final layer)" in labels and "final layer (validation): 70.0" in labels
    results["strategies"]["full"]["score"] = 0.7
    labels = [t.get_text() for t in layers_figure(results).axes[0].get_legend().get_texts()]
    assert "OLFT, layer 3 (validation): 70.0 (= final layer = all layers)" in labels
    results["strategies"]["olft"]["score"] = 0.75  # scores apart: nothing said
    labels = [t.get_text() for t in layers_figure(results).axes[0].get_legend().get_texts()]
    assert "OLFT, layer 3 (validation): 75.0" in labels


def test_layer_plot_claims_standard_errors_only_where_it_draws_them():
    """A binomial SE is a proportion's: bars for accuracy, none for a correlation (which may be
    negative, where the clipped binomial SE is 0), and then the legend does not claim them."""
    from olft.plots import layers_figure

    for metric, bars in (("accuracy", True), ("pearson", False), ("mcc", False)):
        (ax,) = layers_figure(_budgets(metric, {2: 6, 3: 6}, {2: 0.3, 3: 0.45})).axes
        label = ax.get_legend().get_texts()[0].get_text()
        assert label.startswith("candidates: selection score") and ("±1 SE" in label) == bars, (metric, label)
        assert [c.has_yerr for c in ax.containers] == ([True] if bars else []), metric  # no bars: no errorbar at all
        if bars:
            (segments,) = [c.get_segments() for c in ax.collections if len(c.get_segments()) == 2]
            assert all(abs(seg[1][1] - seg[0][1]) > 1 for seg in segments)  # visible bars, x100 like the scores


def test_layer_plot_draws_olfts_own_score_and_keeps_the_legend_off_the_data():
    """The candidates' selection scores (held-out split) can stand above both baselines while OLFT's
    validation score falls below them: OLFT's score is a reference line like theirs, the candidates'
    label names their split, and the legend sits outside the axes, over no error bar."""
    from olft.plots import layers_figure

    results = _probe_halving({2: 0.698, 3: 0.698, 4: 0.64}, {}, selected=3, equivalent=[3])
    results["selection"].update(selector="exhaustive", rounds=[], score_examples=86, ranking=[3, 2, 4])
    for name, score, layers in (("olft", 0.62, [3]), ("final", 0.65, [5]), ("full", 0.66, list(range(6)))):
        results["strategies"][name].update(score=score, layers=layers)
    fig = layers_figure(results)
    (ax,) = fig.axes
    assert _plotted(ax)["reference"] == ["OLFT, layer 3 (validation): 62.0", "final layer (validation): 65.0",
                                         "all layers (validation): 66.0"]  # fmt: skip
    olft = next(line for line in ax.get_lines() if line.get_label().startswith("OLFT"))
    final = next(line for line in ax.get_lines() if line.get_label().startswith("final"))
    assert list(olft.get_ydata()) == [62.0, 62.0] and olft.get_color() != final.get_color()
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0] == "candidates: selection score (train-holdout split, n=86, ±1 SE)", labels
    assert "OLFT, layer 3 (validation): 62.0" in labels
    # Layers 2 and 3 tie on the score: the title says the loss chose (table.md's `confidence_words` says how clearly).
    assert "layers 2, 3 tie on accuracy; the held-out loss chose layer 3" in ax.get_title()
    fig.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= axes_box.x1 and box.x1 <= fig.bbox.width, (box, axes_box, fig.bbox)  # beside the data, in the figure
    # Under --selection-data validation OLFT's score is optimistic, marked as Table 1 marks it.
    results["selection"]["protocol"] = "validation"
    labels = [t.get_text() for t in layers_figure(results).axes[0].get_legend().get_texts()]
    assert "OLFT, layer 3 (validation): 62.0 ‡" in labels and labels[0].startswith("candidates: selection score (validation split")
    # ... and the legend keys the double dagger, as the table's footnote does.
    keys = [label.replace("\n", " ") for label in labels if label.startswith("‡")]
    assert keys == ["‡ optimistic: its layer was chosen on these same validation examples"], labels
    results["selection"]["protocol"] = "train-holdout"
    assert not any("‡" in t.get_text() for t in layers_figure(results).axes[0].get_legend().get_texts())


def _no_signal_probe(model: str) -> dict:
    """A plain probe run whose every probe loses to the constant predictor (held-out loss 0.69)."""
    results = _probe_halving({}, {0: 0.75, 1: 0.72, 2: 0.74}, selected=1, equivalent=[1])
    results["model"] = model
    results["selection"].update(selector="probe", rounds=[{"stage": "probe", "steps": 0, "layers": [0, 1, 2],
                                                           "ranking": [1, 2, 0]}],
                                no_signal=True, baseline_loss=0.69, baseline_predicts="class frequencies",
                                beats_baseline={"0": False, "1": False, "2": False}, equivalence_threshold=1.0)  # fmt: skip
    return results


def test_layer_plot_title_fits_the_figure_and_the_constant_baseline_is_drawn():
    """layers.png: the NO SIGNAL title is wrapped inside the figure (a long local model path too), and
    the probe's yardstick, the constant predictor's loss, is a labelled line on the probe's axis."""
    from olft.plots import layers_figure

    for model in ("HuggingFaceTB/SmolLM2-135M", "/home/someone/checkpoints/" + "x" * 90 + "/smollm2-135m"):
        fig = layers_figure(_no_signal_probe(model))
        fig.canvas.draw()
        title = fig.axes[0].title
        box = title.get_window_extent(fig.canvas.get_renderer())
        assert "NO SIGNAL: no probe beats a constant predictor" in title.get_text()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height, (box, fig.bbox)
    ax = fig.axes[-1]  # the probe's, below the task metric's
    line = next(line for line in ax.get_lines() if line.get_label().startswith("constant predictor"))
    assert line.get_label() == "constant predictor (the class frequencies): held-out loss 0.690"
    assert list(line.get_ydata()) == [-69.0, -69.0] and min(ax.get_ylim()) < -69.0 < max(ax.get_ylim())
    # probe-halving: on the probe's panel, not the task metric's; without a probe's baseline, no line.
    both = _probe_halving({3: 0.58, 4: 0.57}, {0: 0.75, 1: 0.72}, selected=3, equivalent=[3])
    both["selection"].update(baseline_loss=0.69, baseline_predicts="class frequencies", protocol="validation")
    metric_ax, probe_ax = layers_figure(both).axes
    assert _plotted(probe_ax)["reference"] == ["constant predictor (the class frequencies): validation loss 0.690"]
    assert not any("constant" in label for label in _plotted(metric_ax)["reference"])
    both["selection"]["baseline_loss"] = None
    assert _plotted(layers_figure(both).axes[1])["reference"] == []


def test_plot_and_table_give_the_selections_own_verdict():
    """The paired noise estimate recorded by the selection decides, not a binomial SE on scores."""
    from olft.plots import layers_figure
    from olft.selectionmd import selection_verdict

    def said(results):
        title, table = layers_figure(results).axes[0].get_title(), table_md(results)
        return selection_verdict(results["selection"]), "NEAR-TIE" in title, "within noise" in table or "binomial" in table

    # Runner-up 1 point behind on 57 examples (within one binomial SE) but 1.2 paired SE behind: not a tie.
    clear = _probe_halving({3: 0.58, 4: 0.57}, {0: 0.6}, selected=3, equivalent=[3])
    assert said(clear) == (None, False, False)
    assert "probe-halving selector: the winner's held-out loss is 1.2 standard errors below the runner-up's." in table_md(clear)
    # Runner-up far behind in accuracy, yet within the noise of the per-example losses: a near-tie everywhere.
    tied = _probe_halving({3: 0.80, 4: 0.60}, {0: 0.6}, selected=3, equivalent=[3, 4])
    assert said(tied) == ("near-tie", True, True)
    assert "layers 3, 4 within noise" in layers_figure(tied).axes[0].get_title()
    # Which way the held-out loss points between them, as the console says it: the winner's may be the higher.
    tied["selection"]["gaps"] = {"3": 0.0, "4": -0.4}
    assert ("Layers 3, 4 are within noise of each other (probe-halving selector): layer 3 wins on accuracy but its "
            "held-out loss is 0.40 standard errors above layer 4's; equivalent choices.") in table_md(tied)
    # Results from before the selection recorded `equivalent`: the binomial rule, in both places.
    old = {**clear, "selection": {k: v for k, v in clear["selection"].items() if k not in ("equivalent", "confidence", "flat")}}
    assert said(old) == ("near-tie", True, True)
    assert "binomial SE" in layers_figure(old).axes[0].get_title() and "binomial standard error" in table_md(old)


def test_within_noise_sentence_names_a_finalist_clearly_below_the_winner_on_loss():
    """Ranked by score, a finalist may have a held-out loss far below the winner's: outside the noise,
    so not among the equivalent layers, yet the 'within noise' sentence must not leave it out."""
    tied = _probe_halving({3: 0.80, 4: 0.78, 5: 0.60}, {0: 0.6}, selected=3, equivalent=[3, 4])
    tied["selection"].update(gaps={"3": 0.0, "4": -0.4, "5": -3.1}, equivalence_threshold=1.0)
    table = table_md(tied)
    assert ("held-out loss is 0.40 standard errors above layer 4's; equivalent choices. Layer 5 is not: layer 5's "
            "held-out loss is 3.10 standard errors below layer 3's (outside the noise: score and loss disagree).") in table
    tied["selection"]["gaps"]["5"] = 3.1  # clearly above the winner: it lost on both counts, nothing to say
    assert "Layer 5" not in table_md(tied)
    tied["selection"]["gaps"].update({"5": -2.0, "6": -1.0})  # at the threshold counts as outside; two are named
    tied["selection"]["candidates"].append({**tied["selection"]["candidates"][-1], "layer": 6})
    assert ("equivalent choices. Layers 5, 6 are not: layer 5's held-out loss is 2.00 standard errors below layer 3's; "
            "layer 6's held-out loss is 1.00 standard errors below layer 3's (outside") in table_md(tied)


def test_plot_says_when_score_and_loss_disagree_as_the_table_does():
    """The winner scored higher but the runner-up has the lower held-out loss (negative confidence):
    table.md says "score and loss disagree", and so does the plot's title, with the same numbers."""
    from olft.plots import layers_figure

    results = _probe_halving({1: 0.509, 2: 0.526}, {}, selected=2, equivalent=[2])
    results["selection"].update(selector="halving", rounds=[], ranking=[2, 1], confidence=-1.49, gaps={"2": 0.0, "1": -1.49})
    assert "the runner-up has the lower held-out loss, by 1.5 standard errors: score and loss disagree" in table_md(results)
    title = layers_figure(results).axes[0].get_title().replace("\n", " ")
    assert "SCORE AND LOSS DISAGREE: layer 2 scores higher, layer 1's held-out loss is 1.5 SE lower" in title, title
    # A clear winner by the loss too: no such words, in either place.
    results["selection"].update(confidence=1.49, gaps={"2": 0.0, "1": 1.49})
    assert "DISAGREE" not in layers_figure(results).axes[0].get_title() and "disagree" not in table_md(results)


def _selection_rows(table: str) -> list[list[str]]:
    """The selection table's rows (header first), cells stripped."""
    start = table.index("| layer |")
    return [[c.strip() for c in line.strip("|").split("|")] for line in table[start:].splitlines() if line.startswith("|")]


def test_probe_halving_table_keeps_probe_and_trained_scores_in_separate_columns():
    table = table_md(_probe_halving({3: 0.579, 5: 0.544}, {0: 0.645, 4: 0.61}, selected=3, equivalent=[3]))
    header, _, *rows = _selection_rows(table)
    assert header == ["layer", "probe score (-held-out loss x100)", "accuracy x100 after training (steps)",
                      "held-out loss", "seconds"]  # fmt: skip
    assert [r[:3] for r in rows] == [["0", "-64.5", "-"], ["3", "-", "57.9 (54 steps)"], ["4", "-61.0", "-"],
                                     ["5", "-", "54.4 (54 steps)"]]  # fmt: skip
    assert "The probe ranked layers 5, 4, 3, 2, 1, 0 (best first) and kept 3, 5 for training" in table
    assert "scores of those are not recorded" in table  # results from before rounds kept their scores

    # Each round now keeps its own scores: the probe's score of a trained layer is shown beside it.
    recorded = _probe_halving({3: 0.579, 5: 0.544}, {0: 0.645, 4: 0.61}, selected=3, equivalent=[3])
    recorded["selection"]["rounds"][0]["scores"] = {"0": -0.645, "3": -0.62, "4": -0.61, "5": -0.60}
    table = table_md(recorded)
    assert [r[:3] for r in _selection_rows(table)[2:]] == [["0", "-64.5", "-"], ["3", "-62.0", "57.9 (54 steps)"],
                                                           ["4", "-61.0", "-"], ["5", "-60.0", "54.4 (54 steps)"]]  # fmt: skip
    assert "not recorded" not in table
    assert [r[3] for r in _selection_rows(table)[2:]] == ["-", "0.6500", "-", "0.6500"]  # trained layers' losses only

    # Halving without a probe: scores after fewer steps say so.
    halving = _probe_halving({3: 0.579, 5: 0.544}, {}, selected=3, equivalent=[3])
    halving["selection"].update(selector="halving", rounds=[])
    halving["selection"]["candidates"][1]["steps"] = 27
    assert [r[1] for r in _selection_rows(table_md(halving))[2:]] == ["57.9 (54 steps)", "54.4 (27 steps)"]

    # A probe that sent nothing on to training: one column, and it says it holds probe scores.
    probe_only = _probe_halving({}, {0: 0.645, 4: 0.61}, selected=4, equivalent=[4])
    assert _selection_rows(table_md(probe_only))[0] == ["layer", "probe score (-held-out loss x100)", "held-out loss", "seconds"]
    # On a regression task (STS-B: the constant predicts the mean) the probe's loss is a squared error: named so.
    probe_only["selection"]["baseline_predicts"] = "mean"
    assert _selection_rows(table_md(probe_only))[0] == ["layer", "probe score (-held-out squared error x100)",
                                                        "held-out squared error", "seconds"]  # fmt: skip


def test_a_collapsed_strategy_is_marked_in_table_md():
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results["eval_splits"] = ["validation", "test"]
    for s in results["strategies"].values():
        s["metrics"]["test"] = {"accuracy": 0.5}
    results["strategies"]["final"]["one_class"] = {"validation": "positive"}
    results["strategies"]["olft"]["one_class"] = {}
    table = table_md(results)
    assert "| final | 3 | 50.0 † | 50.0 |" in table and "| olft | 1 | 50.0 l-1 | 50.0 l-1 |" in table  # Table 1
    assert _row(table, "final")[6] == "50.0 †" and _row(table, "olft")[6] == "50.0"  # Table 2's score (validation)
    assert "† final predicts 'positive' for every validation example: it collapsed to one class" in table
    assert table.count("†") == 3


def test_evaluate_says_which_strategy_collapsed(tmp_path, monkeypatch):
    from olft import evaluate

    results = _results(None)
    results["strategies"]["final"]["one_class"] = {"validation": "positive"}
    (tmp_path / "weights").mkdir()
    for name in results["strategies"]:
        (tmp_path / "weights" / f"{name}.safetensors").write_bytes(b"")
    monkeypatch.setattr(evaluate, "read_run", lambda folder: (results, None))
    monkeypatch.setattr(evaluate, "load_weights", lambda path: {})
    monkeypatch.setattr(evaluate, "Session", lambda cfg, quiet, train_split: None)
    monkeypatch.setattr(evaluate, "evaluate_saved", lambda session, layers, weights: {"validation": Scores({"accuracy": 0.5})})
    monkeypatch.setattr(evaluate, "describe_status", lambda folder: "complete")
    lines = evaluate.evaluate_run(tmp_path).splitlines()
    assert "  final validation: predicts 'positive' for every example, accuracy=0.5000 (results.json: 0.5000)" in lines
    assert "  olft validation: accuracy=0.5000 (results.json: 0.5000)" in lines


def test_evaluate_says_when_the_selection_found_no_signal_or_a_tie(tmp_path, monkeypatch):
    """`olft evaluate`'s selection line carries the headline's caveat: a layer chosen among trained
    candidates that all lose to a constant (the reviewer's four one-class candidates) is a guess."""
    from olft import evaluate

    def line(**sel):
        results = {**_results(None), "selection": {"status": "finished", "selected_layer": 7, "selector": "exhaustive", **sel}}
        monkeypatch.setattr(evaluate, "read_run", lambda folder: (results, None))
        monkeypatch.setattr(evaluate, "describe_status", lambda folder: "complete")
        monkeypatch.setattr(evaluate, "weights_file", lambda folder, name: tmp_path / "none")
        return evaluate.evaluate_run(tmp_path).splitlines()[1]

    guess = line(trained_no_signal=True, equivalent=[7, 6, 4, 5])
    assert guess == "  selection: layer 7 (selector exhaustive; no signal: the choice is a guess)", guess
    assert line(trained_no_signal=False, equivalent=[7, 6, 4, 5]) == "  selection: layer 7 (selector exhaustive; within noise of layers 4, 5, 6)"
    assert line(trained_no_signal=False, equivalent=[7]) == "  selection: layer 7 (selector exhaustive)"


def test_a_selection_longer_than_olfts_training_is_explained():
    """At a small --max-train-samples selection can outlast OLFT's training; the table says why
    (a fixed budget, not the training set) instead of leaving a whole-run share over 100 %."""
    results = _results({"olft": 30.0, "final": 20.0, "full": 40.0}, selection_cpu=60.0)
    results["train_examples"] = 5
    table = table_md(results)
    assert "= 225.0 % of all-layer training." in table
    assert ("Selection took longer than OLFT's training: its cost is set by the selection budget (8 selection examples per "
            "candidate, against 5 training examples here) and the probe selector") in table
    quick = table_md(_results({"olft": 30.0, "final": 20.0, "full": 100.0}))  # selection 12 s < training 30 s
    assert "whole run" in quick and "Selection took longer" not in quick


def test_selection_text_pluralises_its_counts():
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    assert "Selection (train-holdout): 1 candidate, 8 training / 8 scoring examples each" in table_md(results)
    results["selection"].update(score_examples=1, candidates=results["selection"]["candidates"] * 2)
    assert "Selection (train-holdout): 2 candidates, 8 training / 1 scoring example each" in table_md(results)


def test_validation_protocol_marks_olfts_score_optimistic():
    """Under --selection-data validation the split that chose OLFT's layer is the one Table 1 reports:
    OLFT's score there is marked optimistic, in table.md and in results.json's `optimistic_scores`."""
    from olft.report import optimistic_scores

    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results["selection"]["candidates"][0]["metrics"] = {"accuracy": 0.5, "loss": 0.6}
    table = table_md(results)
    assert optimistic_scores(results) == {} and "‡" not in table and "optimistic" not in table
    assert _selection_rows(table)[0] == ["layer", "probe score (-held-out loss x100)", "held-out loss", "seconds"]
    results["selection"]["protocol"] = "validation"
    table = table_md(results)
    assert optimistic_scores(results) == {"olft": ["validation"]}
    assert "| olft | 1 | 50.0 l-1 ‡ |" in table and "| final | 3 | 50.0 |" in table
    assert _row(table, "olft")[6] == "50.0 ‡" and _row(table, "final")[6] == "50.0"  # Table 2's score too
    assert "‡ Optimistic: --selection-data validation chose OLFT's layer by its score on this same validation split" in table
    assert "so OLFT's validation score in Table 1 is optimistic" in table  # the selection section says it too
    assert _selection_rows(table)[0] == ["layer", "probe score (-validation loss x100)", "validation loss", "seconds"]


def test_verdicts_name_the_validation_loss_under_the_validation_protocol():
    """Under --selection-data validation the candidates' loss is on the validation split: every
    verdict line says "validation loss", as the table's column does, never "held-out"."""
    def validation(results: dict) -> dict:
        results["selection"]["protocol"] = "validation"
        return results

    clear = validation(_probe_halving({3: 0.58, 4: 0.57}, {0: 0.6}, selected=3, equivalent=[3]))
    table = table_md(clear)
    assert "probe-halving selector: the winner's validation loss is 1.2 standard errors below the runner-up's." in table
    assert "held-out" not in table, table
    clear["selection"]["confidence"] = -2.0
    assert "the runner-up has the lower validation loss, by 2.0 standard errors" in table_md(clear)
    tied = validation(_probe_halving({3: 0.80, 4: 0.60}, {0: 0.6}, selected=3, equivalent=[3, 4]))
    tied["selection"]["gaps"] = {"3": 0.0, "4": -0.4}
    table = table_md(tied)
    assert "layer 3 wins on accuracy but its validation loss is 0.40 standard errors above layer 4's" in table
    assert "held-out" not in table, table
    tied["selection"]["gaps"] = {"3": 0.0, "4": 0.4}
    assert "has the lowest validation loss of these layers, but layer 4's is only 0.40" in table_md(tied)
    by_loss = validation(_probe_halving({3: 0.58, 4: 0.57}, {0: 0.6}, selected=3, equivalent=[3]))
    by_loss["selection"]["metric"] = "loss"
    assert "selected layer 3 by lowest validation loss." in table_md(by_loss)
    # The probe's yardstick: scored on the same validation examples.
    mixed = validation(_probe_halving({3: 0.58, 4: 0.57}, {0: 0.6, 1: 0.7}, selected=3, equivalent=[3]))
    mixed["selection"].update(baseline_loss=0.69, baseline_predicts="class frequencies", equivalence_threshold=1.0,
                              beats_baseline={"0": True, "1": False}, no_signal=False)  # fmt: skip
    assert "Predicting the class frequencies has validation loss 0.6900: the probe of layer 0 beats it" in table_md(mixed)
    mixed["selection"].update(beats_baseline={"0": False, "1": False}, no_signal=True)
    table = table_md(mixed)
    assert "No signal: no candidate's probe beats predicting the class frequencies (validation loss 0.690)" in table
    assert "held-out" not in table, table
    # The train protocol keeps its words.
    assert "the winner's held-out loss is 1.2 standard errors" in table_md(_probe_halving({3: 0.58, 4: 0.57}, {0: 0.6},
                                                                                          selected=3, equivalent=[3]))


def test_adaptive_rounds_say_which_layers_were_retrained_and_why():
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results["selection"].update(selector="exhaustive", candidates=[
        {"layer": k, "score": 0.5, "seconds": 1.0, "steps": 6 if k == 2 else 12, "metrics": {"loss": 0.6}} for k in (1, 2, 3, 5)],
        rounds=[{"stage": "train", "steps": 6, "layers": [1, 2, 3, 5], "ranking": [1, 3, 5, 2]},
                {"stage": "train", "steps": 12, "layers": [1, 3, 5], "ranking": [1, 3, 5], "retrained": {
                    "winner": 1, "threshold": 1.0, "gaps": {"2": 1.25, "3": 0.5, "5": -0.3}}}])  # fmt: skip
    assert ("Retrained at 12 steps (--selection-adaptive): layers 1, 3, 5 (held-out loss within 1.0 standard errors "
            "of layer 1's after 6 steps); layer 2's was 1.25 standard errors above.") in table_md(results)
    del results["selection"]["rounds"][1]["retrained"]  # results from before rounds recorded why
    assert "Retrained" not in table_md(results)


def _run(started: str, pid: int, **kw) -> dict:
    """A `timed_by` stamp of the run that started at `started`."""
    return {"pid": pid, "host": "h", "started": started, "device": "cpu", "torch_threads": 1, "world_size": 1, **kw}


def test_runs_are_labelled_in_the_order_they_started():
    """Piece names sort alphabetically ('10-24' before '2-24'); the labels follow the runs' start times."""
    from olft.runtiming import compare_timing, run_labels

    first, later = _run("2026-01-01T10:00:00+00:00", 7), _run("2026-01-01T12:00:00+00:00", 9)
    timing = compare_timing({"10-24": later, "2-24": first, "3-24": later})
    assert [(r["label"], r["pid"], r["pieces"]) for r in timing["runs"]] == [
        ("first run", 7, ["2-24"]), ("continued run", 9, ["10-24", "3-24"])]
    assert run_labels(1) == ["first run"] and run_labels(3) == ["first run", "second run", "third run"]
    assert run_labels(7)[-1] == "run 7"


def _timed(strategy_runs: dict[str, dict], candidate_runs: dict[str, dict]) -> dict:
    """`_results` with its times stamped by the given runs (strategy -> stamp, piece layer-steps -> stamp)."""
    from olft.runtiming import compare_timing

    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results["selection"].update(selector="exhaustive", candidates=[
        {"layer": k, "score": 0.5, "seconds": 3.0, "steps": 24} for k in (1, 2, 10)])  # fmt: skip
    results["timing"] = {"strategies": compare_timing(strategy_runs), "candidates": compare_timing(candidate_runs)}
    return results


def test_times_from_a_continued_run_are_marked_with_their_run():
    """After a resume, every time shown is marked with the run that timed it (the first run or the
    one that continued it), in Table 2 and in the candidates' table; counts are singular or plural."""
    first, later = _run("2026-01-01T10:00:00+00:00", 7), _run("2026-01-01T12:00:00+00:00", 9, torch_threads=2)
    table = table_md(_timed({"olft": later, "final": first, "full": later}, {"1-24": first, "10-24": later, "2-24": first}))
    assert _row(table, "final")[1] == "0.50 (first run)" and _row(table, "full")[1] == "2.00 (continued run)"
    assert "| 1 | 50.0 | 3.0 (first run) |" in table and "| 10 | 50.0 | 3.0 (continued run) |" in table
    assert ("they were timed in 2 runs (first run: process 7 on h, cpu, 1 torch thread, 1 process, started "
            "2026-01-01T10:00:00+00:00; continued run: process 9 on h, cpu, 2 torch threads, 1 process, started "
            "2026-01-01T12:00:00+00:00), which differ in torch_threads; each time is marked with its run") in table
    assert "process(es)" not in table and "(A)" not in table and "(B)" not in table
    assert table.count("**Timings do not compare:**") == 2


def test_times_all_from_one_run_need_no_warning_or_marks():
    """Every shown time from one run compares: no warning and no run marks, whichever run it was."""
    later = _run("2026-01-01T12:00:00+00:00", 9)
    table = table_md(_timed({n: later for n in ("olft", "final", "full")}, {"1-24": later, "2-24": later, "10-24": later}))
    assert "Timings do not compare" not in table and "run)" not in table
    # One run, but a piece without a record of its run: that still does not compare (and says why).
    table = table_md(_timed({"olft": later, "final": later, "full": None}, {"1-24": later}))
    assert "full carries no record of the run that timed it" in table and "run)" not in table


def test_only_the_candidates_table_md_shows_are_compared():
    """A layer's earlier round is a piece too, but table.md shows only its last: an earlier round
    timed by the first run does not make the shown times (all the continued run's) incomparable."""
    from types import SimpleNamespace

    from olft.runtiming import shown_candidates

    folder = SimpleNamespace(piece_names=lambda kind: ["1-12", "1-24", "10-24", "2-12"])
    sel = {"candidates": [{"layer": 1, "steps": 24}, {"layer": 10, "steps": 24}, {"layer": 2, "steps": 12},
                          {"layer": 3, "steps": 0}]}  # fmt: skip
    assert shown_candidates(folder, {"selection": sel}) == ["1-24", "10-24", "2-12"]
    assert shown_candidates(folder, {"selection": None}) == ["1-12", "1-24", "10-24", "2-12"]  # mid-selection: all


def test_layer_plot_sets_two_rounds_side_by_side_at_a_layer():
    """Two rounds scored at the same layers: their points and error bars are dodged apart (else the
    bars overlap), each within its layer's column, the star on its round's point, ticks on layers."""
    from olft.plots import DODGE_WIDTH, layers_figure

    halving = _budgets("accuracy", {2: 12, 3: 12}, {2: 0.73, 3: 0.75})
    halving["selection"]["rounds"] = [{"stage": "train", "steps": 6, "layers": [2, 3], "scores": {"2": 0.66, "3": 0.64}},
                                      {"stage": "train", "steps": 12, "layers": [2, 3], "scores": {"2": 0.73, "3": 0.75}}]
    fig = layers_figure(halving)
    (ax,) = fig.axes
    xs = {line.get_label().split(":")[0]: list(line.get_xdata()) for line in ax.get_lines()
          if line.get_label().startswith("candidates")}  # fmt: skip
    assert xs == {"candidates after 12 steps": [2 - DODGE_WIDTH / 2, 3 - DODGE_WIDTH / 2],
                  "candidates after 6 steps": [2 + DODGE_WIDTH / 2, 3 + DODGE_WIDTH / 2]}  # fmt: skip
    bars = [sorted({seg[0][0] for seg in c.lines[2][0].get_segments()}) for c in ax.containers]
    assert bars == [xs["candidates after 12 steps"], xs["candidates after 6 steps"]]  # each bar on its own point
    (star,) = [line for line in ax.get_lines() if line.get_label().startswith("selected")]
    assert list(star.get_xdata()) == [3 - DODGE_WIDTH / 2]  # layer 3 won after 12 steps
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(t == round(t) for t in ticks)
    # One round: on the layers themselves.
    (ax,) = layers_figure(_budgets("accuracy", {2: 12, 3: 12}, {2: 0.73, 3: 0.75})).axes
    (line,) = [line for line in ax.get_lines() if line.get_label().startswith("candidates")]
    assert list(line.get_xdata()) == [2, 3]


def test_layer_plot_never_blows_up_a_tiny_score_difference():
    """STS-B's Pearson for two layers 0.1 points apart: the axis spans at least MIN_SCORE_SPAN points
    about them, not a fraction of a point; a wider spread keeps its own range."""
    from olft.plots import MIN_SCORE_SPAN, layers_figure

    for metric in ("pearson", "spearman", "accuracy"):
        results = _budgets(metric, {2: 6, 3: 6}, {2: 0.881, 3: 0.882})
        results["strategies"] = {}  # no reference lines to widen the range
        (ax,) = layers_figure(results).axes
        low, high = ax.get_ylim()
        assert high - low >= MIN_SCORE_SPAN - 1e-9 and low < 88.1 < 88.2 < high, (metric, low, high)
    results = _budgets("pearson", {2: 6, 3: 6}, {2: 0.30, 3: 0.60})
    results["strategies"] = {}
    low, high = layers_figure(results).axes[0].get_ylim()
    assert high - low > 30 and low < 30 and high > 60


def test_a_strategy_resumed_from_a_checkpoint_is_one_and_its_time_is_its_own():
    from olft.runtiming import compare_timing

    run = _run("2026-01-01T12:00:00+00:00", 9)
    one = _timed({n: run for n in ("olft", "final", "full")}, {"1-24": run})
    timed = {n: run for n in ("olft", "final", "full")}
    one["timing"]["strategies"] = compare_timing(timed, ["full"])  # a checkpoint that carried the earlier run's time
    assert "full resumed from a checkpoint, so its time adds the spans of the runs before and after it" in table_md(one)
    one["timing"]["strategies"] = compare_timing(timed, ["full"], ["full"])  # one from an olft that saved no time
    assert "full resumed from a checkpoint, so its time counts only the steps after it" in table_md(one)
    one["timing"]["strategies"] = compare_timing(timed, ["olft", "full"], ["olft", "full"])
    assert "olft, full resumed from a checkpoint, so their time counts only the steps after it" in table_md(one)
    del one["timing"]["strategies"]["partial_time"]  # results.json of an olft before the split: every one partial
    assert "olft, full resumed from a checkpoint, so their time counts only the steps after it" in table_md(one)


@pytest.mark.parametrize("status, banner", [
    ("running", "**UNFINISHED:** written while a run was working on this folder; if none holds it now"),
    ("interrupted", "**UNFINISHED:** its run was interrupted (Ctrl-C or SIGTERM) before it finished."),
    ("stopped by an error", "**UNFINISHED:** its run stopped on an error before it finished (OSError: disk full)."),
    ("complete", None), ("finished with failures", None), (None, None)])
def test_table_md_of_a_run_that_has_not_ended_says_it_is_unfinished_and_what_is_missing(tmp_path, status, banner):
    """Until its run ends, table.md says so at the top and names what is not finished; once it
    ended (or for results.json from before statuses), no banner."""
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    results.update(status=status, error="OSError: disk full", strategy_names=["layers=2", "olft", "final", "full"])
    table = table_md(results, tmp_path)
    if banner is None:
        assert "UNFINISHED" not in table
        return
    assert table.split("\n")[2].startswith(banner), table.split("\n")[2]
    assert f"Not finished: layers=2. `olft run --config {tmp_path}/config.json --out {tmp_path}` continues" in table
    # A selection finished but nothing tuned yet: not a selection-only folder, and no layer is claimed as tuned
    results.update(strategies={}, failed={})
    table = table_md(results, tmp_path)
    assert "Not finished: layers=2, olft, final, full." in table and "Selection only" not in table and "| olft |" not in table
    results["selection"] = None  # nor chosen: the selection is named as unfinished
    assert "Not finished: the selection, layers=2, olft, final, full." in table_md(results, tmp_path)


def _table_rows(table: str, which: str) -> list[str]:
    """The strategy names of Table `which`'s rows ("1" or "2"), top to bottom."""
    part = table.split(f"Table {which}:")[1].split("\n\n", 2)[1]
    return [line.split("|")[1].strip() for line in part.splitlines()[2:]]


def test_strategy_rows_come_in_one_order_whatever_order_the_pieces_came_in():
    """An add-on (`olft train --layers N`) lists its strategy first in results.json's order of that
    run; Tables 1 and 2 still read olft, final, full, then explicit layers by layer number (2 before
    10, not as text), a failed strategy in its place."""
    results = _results({"olft": 30.0, "final": 20.0, "full": 100.0})
    extra = {n: {**results["strategies"]["final"], "layers": layers} for n, layers in (("layers=10", [10]), ("layers=2", [2]))}
    results["num_layers"] = 12
    results["strategies"] = {"layers=10": extra["layers=10"], "full": results["strategies"]["full"],
                             "olft": results["strategies"]["olft"], "layers=2": extra["layers=2"],
                             "final": results["strategies"]["final"]}  # fmt: skip
    results["failed"] = {"layers=2+5": {"layers": [2, 5], "error": "diverged"}}
    table = table_md(results)
    assert _table_rows(table, "1") == ["olft", "final", "full", "layers=2", "layers=2+5", "layers=10"]
    assert _table_rows(table, "2") == ["olft", "final", "full", "layers=2", "layers=10"]


def test_a_selection_timed_by_two_runs_is_marked_with_both():
    """A selection stopped part way and continued: its total sums candidates the first run timed and
    candidates the continued run timed, so the selection line, the whole-run line and the notes say
    so, as they do of a strategy timed in another run; a selection from one run needs no mark."""
    first, later = _run("2026-01-01T10:00:00+00:00", 7), _run("2026-01-01T12:00:00+00:00", 9, torch_threads=2)
    both = [first, later, later]  # its candidates' pieces and its own, by the runs that saved them
    table = table_md(_timed({"olft": later, "final": later, "full": later, "selection": both},
                            {"1-24": later, "10-24": later, "2-24": later, "selection": both}))
    assert "0.50 min wall, 0.20 min CPU (first run + continued run) (not included in OLFT's train time above)" in table
    assert ("OLFT's whole run (selection 0.20 min (first run + continued run) + its training 0.50 min (continued run), "
            "CPU time) = 42.0 %") in table
    assert _row(table, "full")[1] == "2.00 (continued run)" and "| 10 | 50.0 | 3.0 (continued run) |" in table
    assert table.count("**Timings do not compare:**") == 2 and "which differ in torch_threads" in table
    assert "**Timings do not compare:** The selection's times (its total and its candidates') are not from one" in table
    one = table_md(_timed({n: later for n in ("olft", "final", "full", "selection")},
                          {"1-24": later, "10-24": later, "2-24": later, "selection": [later, later]}))
    assert "Timings do not compare" not in one and "run)" not in one


def test_compare_timing_lists_a_total_under_every_run_that_timed_part_of_it():
    from olft.runtiming import compare_timing

    first, later = _run("2026-01-01T10:00:00+00:00", 7), _run("2026-01-01T12:00:00+00:00", 9)
    timing = compare_timing({"olft": later, "selection": [later, first, later]})
    assert [(r["label"], r["pieces"]) for r in timing["runs"]] == [("first run", ["selection"]),
                                                                  ("continued run", ["olft", "selection"])]
    assert timing["comparable"] is False and timing["differs_in"] == ["run"]
    assert compare_timing({"olft": later, "selection": [later, later]})["comparable"] is True
    assert compare_timing({"olft": later, "selection": [later, None]})["unrecorded"] == ["selection"]


def test_an_unfinished_selection_shows_the_probes_scores_as_probe_scores():
    """A probe-halving selection stopped once its probe finished and before any finalist did: table.md
    lists the probe's scores, marked as such, and the layers it passed on; no trained candidate yet."""
    from olft.select import Candidate, probe_piece, unfinished_entry
    from olft.selectionmd import unfinished_lines

    probed = [Candidate(layer, -0.5 - layer / 100, 0.1, {"loss": 0.5 + layer / 100}, steps=0, example_losses=[0.5, 0.5])
              for layer in range(4)]  # fmt: skip
    sel = unfinished_entry([], {"selector": "probe-halving"}, probe_piece(probed, 0.4, 0.4, [0, 1, 2, 3], [0, 1]))
    assert [(c["layer"], c["steps"], c["score"]) for c in sel["candidates"]] == [(c.layer, 0, c.score) for c in probed]
    assert sel["probe"] == {"ranking": [0, 1, 2, 3], "finalists": [0, 1]} and sel["selected_layer"] is None
    assert not any("example_losses" in c for c in sel["candidates"])
    line = unfinished_lines(sel, "accuracy", "olft select --config c.json --out o")[1]
    assert ("The probe scored 4 candidates (probe score (-held-out loss x100), probe scores, not the task metric): layer 0 "
            "-50.0; layer 1 -51.0; layer 2 -52.0; layer 3 -53.0. It passed layers 0, 1 on to training; no trained candidate "
            "finished yet. `olft select --config c.json --out o` continues it") in line, line
    assert "probe" not in unfinished_entry([{"layer": 1, "steps": 4, "score": 0.5}], {"selector": "exhaustive"})


def test_an_unfinished_selection_counts_layers_not_pieces():
    """probe-halving stopped mid-halving: five layers trained at 4 steps and layer 2 also at 8 (its next
    rung). table.md counts 5 trained candidates, each with its latest round and the earlier one named."""
    from olft.select import Candidate, probe_piece, unfinished_entry
    from olft.selectionmd import unfinished_lines

    probed = [Candidate(layer, -0.5 - layer / 100, 0.1, {"loss": 0.5}, steps=0) for layer in range(10)]
    trained = [{"layer": layer, "steps": 4, "score": 0.5 + layer / 100} for layer in range(5)]
    trained.append({"layer": 2, "steps": 8, "score": 0.6})
    sel = unfinished_entry(trained, {"selector": "probe-halving"}, probe_piece(probed, 0.4, 0.4, list(range(10)),
                                                                               list(range(5))))
    line = unfinished_lines(sel, "accuracy", "olft select --config c.json --out o")[1]
    assert ("It passed layers 0, 1, 2, 3, 4 on to training; 5 trained candidates finished (accuracy x100, each layer's "
            "latest round): layer 0 50.0 (4 steps); layer 1 51.0 (4 steps); layer 2 60.0 (8 steps; 52.0 at 4 steps); "
            "layer 3 53.0 (4 steps); layer 4 54.0 (4 steps).") in line, line
    no_probe = unfinished_lines(unfinished_entry(trained, {"selector": "halving"}), "accuracy", "olft select")[1]
    assert "5 candidates finished (accuracy x100, each layer's latest round): layer 0 50.0 (4 steps);" in no_probe, no_probe


def test_the_selections_total_counts_the_run_that_probed(tmp_path):
    """A probe-halving selection whose probe stage one run finished and whose finalists the continued
    run trained: its total time sums both runs' work, so results.json's timing lists it under both
    (the probe piece's stamp counts, as a candidate piece's does)."""
    from olft.report import write_json
    from olft.runfolder import RunFolder
    from olft.runtiming import folder_timing

    first, later = _run("2026-01-01T10:00:00+00:00", 7), _run("2026-01-01T12:00:00+00:00", 9)
    folder = RunFolder(tmp_path, {}, writer=False)  # an empty folder: its pieces are written below
    (tmp_path / "pieces").mkdir()
    write_json(tmp_path / "pieces" / "probe.json", {"timed_by": first})
    write_json(tmp_path / "pieces" / "selection.json", {"timed_by": later})
    pieces = {"1-4": {"timed_by": later}, "2-4": {"timed_by": later}}
    results = {"strategies": {}, "selection": {"status": "finished", "candidates": [
        {"layer": k, "score": 0.5, "steps": 4} for k in (1, 2)]}}  # fmt: skip
    timing = folder_timing(folder, results, pieces)["candidates"]
    assert [(r["label"], r["pieces"]) for r in timing["runs"]] == [("first run", ["selection"]),
                                                                  ("continued run", ["selection"])], timing
    assert timing["comparable"] is False


def test_table_1_says_the_learning_rate_each_strategy_trained_at():
    from olft.report import rates_text

    results = _results(None)
    for name, lr in {"olft": 1e-3, "final": 1e-3, "full": 3e-4}.items():
        results["strategies"][name]["lr"] = lr
    assert "\nLearning rates: olft 0.001, final 0.001, full 0.0003.\n" in table_md(results)
    results["strategies"]["full"]["lr"] = 1e-3
    assert "\nLearning rate 0.001 (every strategy).\n" in table_md(results)
    del results["strategies"]["final"]["lr"]  # not recorded: named by those that did
    assert rates_text(results["strategies"]) == "learning rate 0.001 (olft, full)"
    assert rates_text({"olft": {"layers": [1]}}) == ""  # a folder from before rates were recorded
    assert "earning rate" not in table_md(_results(None))
