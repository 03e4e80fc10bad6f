import os
from pathlib import Path

import pytest
import torch

from tiny import make_glue, make_model_folder

# Tiny models gain nothing from threads, and spinning worker threads slow a loaded machine badly.
torch.set_num_threads(1)
os.environ["OMP_NUM_THREADS"] = "1"

FAMILIES = ("gpt2", "llama", "mistral", "bert")
SHARED_GLUE = Path(os.environ.get("GLUE_DIR") or Path(__file__).resolve().parents[2] / "shared" / "glue")


def glue_file(relative: str) -> Path:
    """A file of the real GLUE data (e.g. "RTE/dev.tsv") under $GLUE_DIR.

    With no GLUE data configured ($GLUE_DIR unset and no ../shared/glue) the test is skipped;
    once GLUE data is configured a missing file fails the test: CI sets $GLUE_DIR, and a test
    that quietly skips there checks nothing.
    """
    if not os.environ.get("GLUE_DIR") and not SHARED_GLUE.is_dir():
        pytest.skip("no GLUE data: set $GLUE_DIR to a folder in the original GLUE layout")
    path = SHARED_GLUE / relative
    if not path.is_file():
        pytest.fail(f"GLUE data is configured ({SHARED_GLUE}) but {relative} is missing from it")
    return path


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


@pytest.fixture(autouse=True)
def _close_figures():
    """Tests that inspect layers_figure's Figure leave it open; close them so pyplot does not keep
    (and warn about) dozens of figures across the suite."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture
def tokenizer_drops(monkeypatch):
    """Call with a regular expression: models loaded after that get a tokenizer that deletes its
    every match before tokenizing, so a text of nothing else has zero tokens (as with a broken tokenizer)."""
    from tokenizers import Regex, normalizers

    import olft.pipeline

    load = olft.pipeline.load_stack

    def drop(regex: str) -> None:
        def broken(*args, **kwargs):
            stack, tokenizer = load(*args, **kwargs)
            tokenizer.backend_tokenizer.normalizer = normalizers.Replace(Regex(regex), "")
            return stack, tokenizer

        monkeypatch.setattr(olft.pipeline, "load_stack", broken)

    return drop
