"""The speed benchmark's pure parts (ratios, targets, settings, memory probes) and the GPU
script's CPU path on a tiny model (benchmarks/speed.py, speed_memory.py, gpu_speed.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import gpu_speed  # noqa: E402
import speed  # noqa: E402
import speed_memory  # noqa: E402
import speed_report  # noqa: E402

MEASURED = {
    "all_adapter": {"median_s": 2.0},
    "middle_cached": {"median_s": 0.5},
    "final_cached": {"median_s": 0.1},
    "plain_forward_epoch": {"median_s": 4.0, "wall_s": [4.0]},
    "cache_build_final": {"median_s": 3.0, "wall_s": [3.0]},
    "olft_epoch_middle": {"seconds": 10.0},
    "peer_epoch_middle": {"seconds": 40.0},
    "peer_pad128_middle": {"seconds": 100.0},
    "olft_epoch_final": {"seconds": 5.0},
    "peer_epoch_final": {"seconds": 20.0},
    "memory_all_layer": {"peak_rss_mb": 1000.0, "peak_above_load_mb": 400.0},
    "memory_middle_cached_memory": {"peak_rss_mb": 800.0, "peak_above_load_mb": 200.0, "cache_mb": 5.0},
}


def test_ratios_take_the_fastest_peer_and_the_right_pairs():
    r = speed_report.ratios(MEASURED)
    assert r["olft_epoch_vs_best_peer"] == 0.25  # over the best recipe (40 s), not the pad-128 one
    assert r["olft_final_epoch_vs_best_peer"] == 0.25
    assert r["middle_cached_vs_all_layer"] == 0.25
    assert r["final_cached_vs_all_layer"] == 0.05
    assert r["cache_build_vs_plain_forward_epoch"] == 0.75
    assert r["peak_memory_middle_vs_all_layer"] == 0.8
    assert r["peak_memory_above_load_middle_vs_all_layer"] == 0.5
    assert "selection_cached_vs_plain" not in r  # absent inputs, absent ratio
    faster_pad = {**MEASURED, "peer_pad128_middle": {"seconds": 20.0}}
    assert speed_report.ratios(faster_pad)["olft_epoch_vs_best_peer"] == 0.5


def test_time_ratios_use_cpu_seconds_where_recorded():
    both = {**MEASURED, "olft_epoch_middle": {"seconds": 10.0, "cpu_s": 3.0}, "peer_epoch_middle": {"seconds": 40.0, "cpu_s": 6.0},
            "peer_pad128_middle": {"seconds": 100.0, "cpu_s": 12.0}}  # fmt: skip
    assert speed_report.ratios(both)["olft_epoch_vs_best_peer"] == 0.5  # 3 / 6 CPU s
    assert speed_report.ratios(both, "wall")["olft_epoch_vs_best_peer"] == 0.25  # 10 / 40 wall s
    one_sided = {**both, "peer_pad128_middle": {"seconds": 100.0}}  # no CPU time on one side: wall for all
    assert speed_report.ratios(one_sided)["olft_epoch_vs_best_peer"] == 0.25


def test_epoch_layer_model():
    assert speed_report.epoch_layer_model(30, 15, pooled=False) == 1.0  # the build costs what the cache saves
    assert speed_report.epoch_layer_model(30, 15, pooled=True) < 1.0
    assert speed_report.epoch_layer_model(30, 15, pooled=False, epochs=3) == round((15 + 3 * 45) / (3 * 60), 4)


def test_targets_say_met_or_missed():
    t = speed_report.targets(speed_report.ratios(MEASURED))
    assert t["olft_epoch_vs_best_peer"] == {"ratio": 0.25, "target": "<= 0.34", "met": True}
    assert t["peak_memory_middle_vs_all_layer"]["met"] is False  # 0.8 > 0.6
    assert t["cache_build_vs_plain_forward_epoch"]["met"] is True


def test_markdown_has_times_memory_and_ratios():
    data = {"measurements": MEASURED, "ratio_to_all_layer_adapter": {"all_adapter": 1.0, "middle_cached": 0.25}}
    data["ratios"] = speed_report.ratios(MEASURED)
    data["targets"] = speed_report.targets(data["ratios"])
    md = speed_report.markdown(data)
    assert "| middle_cached | 0.500 s/step (median) | 0.250 |" in md
    assert "| middle_cached_memory | 800.0 | 200.0 | 5.0 |" in md
    assert "| peak_memory_middle_vs_all_layer | 0.800 | <= 0.6 | missed |" in md


def test_quick_fills_unset_settings_and_skips_selection():
    args = speed.resolve(speed.parse_args(["--out", "x.json", "--quick", "--examples", "64"]))
    assert args.examples == 64 and args.rounds == speed.QUICK["rounds"] and "selection" in args.skip.split(",")
    full = speed.resolve(speed.parse_args(["--out", "x.json"]))
    assert full.examples == speed.FULL["examples"] and "selection" not in full.skip


def test_proc_status_parsing_and_probe_layers():
    text = "Name:\tpython\nVmHWM:\t  123456 kB\nVmRSS:\t   1000 kB\n"
    assert speed_memory.proc_status_kb("VmHWM", text) == 123456
    assert speed_memory.proc_status_kb("RssAnon", text) is None
    assert speed_memory.layers_of("middle", 30) == [15]
    assert speed_memory.layers_of("final", 30) == [29]
    assert speed_memory.layers_of("all", 3) == [0, 1, 2]


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset is Linux-only")
def test_reset_peak_lowers_the_peak():
    blob = bytearray(64 * 1024**2)  # raise the peak by 64 MB, then free it
    blob[::4096] = b"\1" * len(blob[::4096])
    del blob
    before = speed_memory.proc_status_kb("VmHWM")
    assert speed_memory.reset_peak()
    assert speed_memory.proc_status_kb("VmHWM") < before - 32 * 1024


def test_gpu_script_runs_on_cpu_with_tiny_shape(tmp_path):
    out = tmp_path / "gpu.json"
    gpu_speed.main(["--tiny", "--examples", "40", "--steps", "2", "--warmup", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    ms = data["measurements"]
    assert list(ms) == ["all_layer", "plain_forward_epoch", "middle_cached", "final_cached", "middle_plain"]  # all-layer first
    assert data["shape"] == gpu_speed.TINY and data["device"] == "cpu"
    assert ms["all_layer"]["layers"] == "0-3" and ms["middle_cached"]["layers"] == [2] and ms["final_cached"]["layers"] == [3]
    for name in ("all_layer", "middle_cached", "final_cached", "middle_plain"):
        assert len(ms[name]["steps_s"]) == 3 and ms[name]["tokens_per_s"] > 0
    assert ms["middle_cached"]["cache_build_s"] >= 0 and ms["middle_cached"]["cache_mb"] > 0
    assert set(data["ratios"]) >= {"middle_cached_vs_all_layer", "cache_build_vs_plain_forward_epoch", "peak_memory_middle_vs_all_layer"}


def test_gpu_shape_is_llama2_7b():
    s = gpu_speed.LLAMA2_7B
    assert (s["num_hidden_layers"], s["hidden_size"], s["intermediate_size"], s["num_attention_heads"]) == (32, 4096, 11008, 32)
    enc = gpu_speed.synthetic_data(500, s["vocab_size"], 0)
    assert all(4 <= n <= 128 for n in enc.lengths) and 18 <= sorted(enc.lengths)[250] <= 32  # short sentences
    assert all(0 < t < s["vocab_size"] for ids in enc.input_ids for t in ids)  # 0 is the pad id
