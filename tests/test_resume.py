"""Runs you can trust: kill and resume, refused config changes, determinism, numerical faults."""

import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from olft.cli import main

TIMING = {"seconds", "train_seconds", "cache_seconds", "resumed_at"}


def _args(model, glue, out, *extra):
    return ["run", "--model", str(model), "--task", "sst2", "--glue-dir", str(glue), "--out", str(out), "--epochs", "2",
            "--batch-size", "8", "--selection-train-samples", "32", "--selection-eval-samples", "16",
            "--checkpoint-every", "3", "--selector", "exhaustive", "-q", *extra]  # candidates train: resumable pieces


def _strip(obj):
    """results.json without wall-clock fields (they differ between any two runs)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING and k != "status"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _cli(args, kill_at=None):
    env = dict(os.environ, OLFT_KILL_AT=kill_at or "")
    return subprocess.run([sys.executable, "-m", "olft.cli", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(model_dirs, tiny_glue, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(_args(model_dirs["gpt2"], tiny_glue, out)) == 0
    return out


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_same_seed_same_results(reference, model_dirs, tiny_glue, tmp_path):
    assert main(_args(model_dirs["gpt2"], tiny_glue, tmp_path / "again")) == 0
    assert _strip(_results(tmp_path / "again")) == _strip(_results(reference))
    for name in ("olft", "final", "full"):
        a = load_file(str(reference / "weights" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "again" / "weights" / f"{name}.safetensors"))
        assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("kill_at", ["candidate2", "olft:step5", "full:step4"])
def test_killed_run_resumes_to_the_same_result(reference, model_dirs, tiny_glue, tmp_path, kill_at):
    out = tmp_path / "run"
    args = _args(model_dirs["gpt2"], tiny_glue, out)
    killed = _cli(args, kill_at)
    assert killed.returncode == -9, killed.stderr
    partial = _results(out)
    assert partial["complete"] is False and not (out / "table.md").exists()
    pieces = {p.name: p.stat().st_mtime_ns for p in (out / "pieces").iterdir()}
    assert pieces  # something finished before the kill
    resumed = _cli(args)
    assert resumed.returncode == 0, resumed.stderr
    final = _results(out)
    assert final["complete"] is True
    assert _strip(final) == _strip(_results(reference))
    for name, mtime in pieces.items():  # finished pieces were not redone
        assert (out / "pieces" / name).stat().st_mtime_ns == mtime
    for name in ("olft", "final", "full"):
        a = load_file(str(reference / "weights" / f"{name}.safetensors"))
        b = load_file(str(out / "weights" / f"{name}.safetensors"))
        assert all((a[k] == b[k]).all() for k in a), name
    if kill_at.endswith("step5") or kill_at.endswith("step4"):
        strategy = kill_at.split(":")[0]
        assert final["strategies"][strategy]["resumed_at"] == 3  # picked up from the step-3 checkpoint


def test_changed_config_is_refused_and_overwrite_starts_clean(reference, model_dirs, tiny_glue, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final")) == 0
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final", "--lr", "0.01")) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "train.lr" in err and "--overwrite" in err
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final", "--lr", "0.01", "--overwrite")) == 0
    assert json.loads((out / "config.json").read_text())["train"]["lr"] == 0.01


def test_non_finite_loss_fails_one_piece_and_the_rest_goes_on(model_dirs, tiny_glue, tmp_path, monkeypatch, capsys):
    import olft.pipeline as pipeline
    from olft.train import NonFiniteLoss

    real_fit = pipeline.fit

    def fit(stack, params, enc, **kw):
        if kw["frozen_below"] == stack.num_layers - 1:  # the final-layer strategy diverges
            raise NonFiniteLoss("Training diverged: the loss became NaN or infinite at step 3. Lower the learning rate")
        return real_fit(stack, params, enc, **kw)

    monkeypatch.setattr(pipeline, "fit", fit)
    out = tmp_path / "run"
    assert main(_args(model_dirs["gpt2"], tiny_glue, out, "--strategies", "final,full")) == 0
    r = _results(out)
    assert "final" in r["failed"] and "step 3" in r["failed"]["final"]["error"]
    assert "full" in r["strategies"] and "final" not in r["strategies"]
    assert r["complete"] is False and r["status"] == "finished with failures"


def test_real_divergence_is_caught(model_dirs, tiny_glue, tmp_path):
    out = tmp_path / "run"
    assert main(_args(model_dirs["llama"], tiny_glue, out, "--strategies", "final", "--lr", "1e30", "--max-grad-norm", "0")) == 0
    r = _results(out)
    assert "final" in r["failed"] and "--lr" in r["failed"]["final"]["error"]
