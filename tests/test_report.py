"""table.md's Table 2: wall and CPU minutes side by side, time % on one stated basis (CPU seconds
when every strategy recorded them, else wall), and OLFT's whole-run cost on the same basis."""

from __future__ import annotations

import json
import re

from olft.report import table_md


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
