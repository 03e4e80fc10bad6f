import os
from pathlib import Path

import pytest
import torch

from tiny import make_glue, make_model_folder

# Tiny models gain nothing from threads, and spinning worker threads slow a loaded machine badly.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

FAMILIES = ("gpt2", "llama", "mistral", "bert")
SHARED_GLUE = Path(os.environ.get("GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "glue"))


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {f: make_model_folder(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory) -> Path:
    return make_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OLFT_CACHE", str(Path.home() / ".cache" / "olft"))
