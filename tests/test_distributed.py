"""Several processes through `accelerate launch`: same answers as one process, resumable.

The launched runs use two CPU processes talking over gloo (`--multi_gpu` is accelerate's name for
"start several processes with torchrun"; with no GPU olft tells accelerate the job is CPU-only).
The reference is the same command in one process with the same seed and --batch-size, which is
the effective batch over all processes.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from olft.cli import main
from olft.distributed import GlobalBatchDropout, shard_batch

STRATEGIES = ("olft", "final", "full")
TIMING = {"seconds", "cpu_seconds", "train_seconds", "train_cpu_seconds", "cache_seconds", "resumed_at", "seconds_before_resume", "timed_by", "timing"}


def _args(model, glue, out, *extra, command="run"):
    # 49 training examples in batches of 8: the last batch holds one example, so one process
    # gets nothing to do there; 21 validation examples in batches of 8 split unevenly too.
    return [command, "--model", str(model), "--task", "sst2", "--glue-dir", str(glue), "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--eval-batch-size", "8", "--candidates", "all",
            "--selection-train-samples", "24", "--selection-eval-samples", "15", "--selector", "exhaustive", "-q", *extra]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args, kill_at=None, processes=2):
    """`accelerate launch` of the olft CLI on CPU processes; returns the finished process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", OLFT_KILL_AT=kill_at or "")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(_free_port()), "-m", "olft.cli"]  # fmt: skip
    return subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=240)


def _results(out):
    return json.loads((out / "results.json").read_text())


def _strip(obj):
    """Results without timings, and without held-out losses (compared by `_losses`: a resumed
    process's activation cache starts at another candidate, so they agree to float rounding only),
    and without the checkout's commit (a commit made while the suite runs is no difference in the run)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING and k not in ("status", "loss", "git_commit")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from tiny import make_glue, make_model_folder

    root = tmp_path_factory.mktemp("dist")
    return make_model_folder("llama", root / "llama"), make_glue(root / "glue", n_train=49, n_dev=21)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    assert main(_args(*data, out)) == 0
    return out


@pytest.fixture(scope="module")
def double(data, tmp_path_factory):
    parent = tmp_path_factory.mktemp("double")
    done = _launch(_args(*data, parent / "run"))
    assert done.returncode == 0, done.stderr[-3000:]
    return parent / "run"


# -- pure pieces ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, world, accum", [(8, 2, 1), (7, 2, 1), (1, 2, 1), (8, 2, 2), (5, 3, 2), (3, 4, 1), (16, 1, 4)])
def test_shards_hold_every_example_once(n, world, accum):
    batch = list(range(100, 100 + n))
    seen, weight = [], 0.0
    for rank in range(world):
        parts = shard_batch(batch, world, rank, accum)
        assert len(parts) == accum  # every process runs the same number of micro-batches
        for part in parts:
            if part.weight == 0:
                assert len(part.indices) == 1  # a stand-in that contributes nothing
                continue
            assert part.indices == batch[part.start : part.start + len(part.indices)]
            assert part.weight == pytest.approx(len(part.indices) / n)
            seen += part.indices
            weight += part.weight
    assert sorted(seen) == batch and weight == pytest.approx(1.0)


def test_global_batch_dropout_draws_the_mask_one_process_would():
    x = torch.randn(8, 16)
    torch.manual_seed(3)
    expected = torch.nn.Dropout(0.1).train()(x)
    dropout = GlobalBatchDropout(0.1).train()
    torch.manual_seed(3)
    pieces = []
    for k, (start, stop) in enumerate([(0, 3), (3, 8)]):  # two micro-batches of one step
        dropout.rows(8, start, fresh=k == 0)
        pieces.append(dropout(x[start:stop]))
    assert torch.equal(torch.cat(pieces), expected)


def test_grad_accum_matches_one_batch(data, tmp_path):
    base = ["train", "--layers", "2", *_args(*data, tmp_path / "x")[1:]]
    one, four = tmp_path / "one", tmp_path / "four"
    assert main([*base, "--out", str(one)]) == 0
    assert main([*base, "--out", str(four), "--grad-accum", "4"]) == 0
    a, b = _results(one), _results(four)
    assert b["distributed"]["grad_accum"] == 4 and b["distributed"]["per_device_batch_size"] == 2
    assert b["distributed"]["effective_batch_size"] == 8
    name = "layers=2"
    assert a["strategies"][name]["metrics"] == b["strategies"][name]["metrics"]
    wa, wb = load_file(str(one / "weights" / "layers-2.safetensors")), load_file(str(four / "weights" / "layers-2.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_gradient_checkpointing_changes_nothing_but_memory(data, tmp_path):
    base = ["train", "--layers", "1", *_args(*data, tmp_path / "x")[1:]]
    plain, ckpt = tmp_path / "plain", tmp_path / "ckpt"
    assert main([*base, "--out", str(plain)]) == 0
    assert main([*base, "--out", str(ckpt), "--gradient-checkpointing"]) == 0
    assert _results(ckpt)["distributed"]["gradient_checkpointing"] is True
    wa, wb = load_file(str(plain / "weights" / "layers-1.safetensors")), load_file(str(ckpt / "weights" / "layers-1.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


# -- launched runs ----------------------------------------------------------------------------------
def test_two_processes_match_one(single, double):
    a, b = _results(single), _results(double)
    assert b["complete"] is True
    assert b["distributed"]["world_size"] == 2 and b["distributed"]["per_device_batch_size"] == 4
    assert b["distributed"]["effective_batch_size"] == 8 == a["distributed"]["effective_batch_size"]
    assert (b["distributed"]["selection_mode"], b["distributed"]["training_mode"]) == ("candidate-parallel", "data-parallel")
    assert b["selection"]["selected_layer"] == a["selection"]["selected_layer"]
    for name in STRATEGIES:
        sa, sb = a["strategies"][name], b["strategies"][name]
        assert sb["layers"] == sa["layers"] and sb["steps"] == sa["steps"]
        assert sb["metrics"] == sa["metrics"]  # accuracy: every prediction the same
        wa = load_file(str(single / "weights" / f"{name}.safetensors"))
        wb = load_file(str(double / "weights" / f"{name}.safetensors"))
        assert set(wa) == set(wb)
        assert all(torch.allclose(wa[k], wb[k], rtol=1e-5, atol=1e-6) for k in wa), name
    # One writer: one folder, no half-written or second copies of anything.
    assert [p.name for p in double.parent.iterdir()] == ["run"]
    assert not [p for p in double.rglob("*") if ".tmp" in p.name]


def test_candidate_parallel_scores_equal_one_process(single, double):
    a, b = _results(single)["selection"]["candidates"], _results(double)["selection"]["candidates"]
    assert [c["layer"] for c in b] == [0, 1, 2, 3]
    for ca, cb in zip(a, b, strict=True):  # each candidate trained alone: the same predictions
        assert (cb["layer"], cb["score"]) == (ca["layer"], ca["score"])
        _same_metrics(ca["metrics"], cb["metrics"])


def test_data_parallel_selection_matches_one_process(data, single, tmp_path):
    out = tmp_path / "sel"
    done = _launch(_args(*data, out, "--selection-parallel", "data", command="select"))
    assert done.returncode == 0, done.stderr[-3000:]
    r = _results(out)
    assert r["distributed"]["selection_mode"] == "data-parallel"
    a = _results(single)["selection"]
    assert r["selection"]["selected_layer"] == a["selected_layer"]
    for ca, cb in zip(a["candidates"], r["selection"]["candidates"], strict=True):
        _same_metrics(ca["metrics"], cb["metrics"])


def _losses(results: dict) -> list[float]:
    return [c["metrics"]["loss"] for c in results["selection"]["candidates"]]


def _same_metrics(a: dict, b: dict) -> None:
    """Scores equal (same predictions); the held-out loss to float rounding, since the frozen
    activation cache of a process that starts at another candidate sums in another order."""
    assert {k: v for k, v in a.items() if k != "loss"} == {k: v for k, v in b.items() if k != "loss"}
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)


def test_killed_two_process_run_resumes(data, double, tmp_path):
    out = tmp_path / "run"
    args = _args(*data, out, "--checkpoint-every", "3")
    # Rank 0 trains candidate 2 (round two of candidates 0..3): one process dies, the job goes down.
    killed = _launch(args, "candidate2")
    assert killed.returncode != 0
    assert sorted(p.name for p in (out / "pieces").iterdir()) == ["candidate-0-9.json", "candidate-1-9.json"]  # layer-steps: 3 epochs of 24 in batches of 8
    # Then every process dies mid-way through data-parallel tuning, after the step-3 checkpoint.
    killed = _launch(args, "olft:step5")
    assert killed.returncode != 0 and (out / "checkpoints" / "olft.pt").is_file()
    resumed = _launch(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, reference = _results(out), _results(double)
    assert final["complete"] is True and final["strategies"]["olft"]["resumed_at"] == 3
    assert _strip(final) == _strip(reference)
    assert _losses(final) == pytest.approx(_losses(reference), rel=1e-5)
    for name in STRATEGIES:
        a = load_file(str(double / "weights" / f"{name}.safetensors"))
        b = load_file(str(out / "weights" / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
