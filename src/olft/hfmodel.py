"""`olft.load`: a run's tuned model as a transformers sequence-classification model.

The run's headless base model (with the tuned layer's PEFT module in place) is put inside the
family's `AutoModelForSequenceClassification` class and olft's head is mapped onto that class's
head, so the result works with `transformers.pipeline("text-classification", ...)`:

- A run that pooled [CLS] through the pooler (BERT's default): `...ForSequenceClassification`
  pools [CLS] through the pooler, then dropout + `classifier` (Linear with bias): exactly
  olft's head, so the model is the plain transformers class.
- Every other pooling (mean, e.g. minilm-l6's sentence-transformers default; the last real
  token, decoders' default; the first token without a pooler): `Olft<that class>`, the family's
  class with `olft.hfhead.OlftPooling` mixed in. It runs the base model, pools its last hidden
  state by the run's rule over the tokens whose attention_mask is 1 (any padding side) and
  scores with a Linear that has a bias (transformers' decoder `score` has none). It is a
  transformers PreTrainedModel (`transformers.pipeline` takes it); `olft export` writes it as
  `olft_head.py`, loaded with trust_remote_code=True. olft feeds a decoder a sentence pair as
  one text joined by a newline: do the same (`"a\\nb"`), not `text_pair`.
- A class with neither `classifier` nor `score` is refused with an OlftError: use
  `olft predict` or the Python `Session` instead.

Every model returned is checked against olft's own forward on probe inputs (atol 1e-4), so a
mismatch is an error, never a silently different model.

`save_pretrained` writes a folder that reloads as the same model: an `Olft...` class writes
`olft_head.py` beside its weights and names it in config.json's `auto_map` (as `olft export`
does), so `AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)`
builds it again. A model whose tuned layer still holds olft's modules (adapter and prefix runs,
LoRA without `merge=True`) has no such folder: its `save_pretrained` raises OlftError naming the
export that does (transformers would reload it without the modules, silently another model).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from olft.errors import OlftError
from olft.predict import RunInfo, open_run, tuned_session

PROBES = (("the movie was good", "a plot"), ("not really a very fun story and the acting was dull", "yes"))


def load(run_dir: str | Path, strategy: str | None = None, merge: bool = False) -> nn.Module:
    """A transformers `...ForSequenceClassification` model of a run's strategy (eval mode).

    `strategy`: any finished strategy of the run (olft, final, full, layers=...); by default olft,
    or the run's only strategy (`olft train`'s `layers=3`), as `olft predict --strategy`.

    `config.id2label`/`label2id` hold the task's label names (regression: one output, "score").
    `merge=True` folds LoRA into the base weights (a plain transformers model); for adapter
    and prefix runs the model keeps olft's modules inside the tuned layer. Raises OlftError for
    an unfinished run, a strategy not in it, `merge` on a non-LoRA run, or a family whose head
    cannot be mapped (see the module docstring). Use `load_tokenizer` for the tokenizer.
    """
    if not isinstance(merge, bool):  # merge="no" would merge
        raise OlftError(f"merge takes True or False, got {merge!r}.")
    info = open_run(run_dir, strategy)
    if merge and info.cfg.method.method != "lora":
        raise OlftError(f"merge=True folds LoRA into the base weights; this run used {info.cfg.method.method!r}. "
                        "Load it without merge (its modules stay inside the tuned layer).")
    session, applied = tuned_session(info, quiet=True)
    stack = session.stack
    reference = _probe_logits(stack, session)
    if merge:
        merge_lora(stack, applied)
    model = to_transformers(stack, info, session.tokenizer.pad_token_id)
    check_same(model, session, reference, "olft.load")
    if not merge:
        _refuse_saving(model, info.cfg.method.method)
    return model


def _refuse_saving(model: nn.Module, method: str) -> None:
    """Make `model.save_pretrained` (and so `push_to_hub`) raise OlftError: its tuned layer holds
    olft's `method` modules, which a transformers folder would drop on reloading."""
    if method == "lora":
        fix = "load it with olft.load(..., merge=True) (LoRA folded into the weights) and save that, or use `olft export --format peft`"
    else:
        fix = f"{method} modules have no transformers form: use `olft export --format olft` (read by olft.load and olft predict)"

    def save_pretrained(*args, **kwargs):
        raise OlftError(f"save_pretrained would write this model without olft's {method} modules in its tuned layer, and "
                        f"it would reload as another model: {fix}.")

    model.save_pretrained = save_pretrained


def load_tokenizer(run_dir: str | Path):
    """The tokenizer a run was trained with (from its model source).

    For a model with one segment embedding (`families.no_segment_ids`) it returns no
    token_type_ids, as olft fed none. Raises OlftError where the model source's tokenizer has no
    vocabulary (`loading.read_tokenizer`), and, as `load` does, for a folder that is no run folder
    or holds no finished strategy with its weights file (`open_run`): the tokenizer is for a model
    `load` can make.
    """
    from olft.families import no_segment_ids
    from olft.loading import read_config

    info = open_run(run_dir, _any_strategy(run_dir))
    config = read_config(info.cfg.model.model, info.cfg.model.gguf_file)[0]
    tokenizer = source_tokenizer(info)
    if no_segment_ids(config) and "token_type_ids" in tokenizer.model_input_names:
        # olft fed such a model no segment ids: `model(**tokenizer(a, b))` must not pass the pair's
        # id 1, an index its one segment embedding does not have
        tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
    return tokenizer


def source_tokenizer(info: RunInfo):
    """The tokenizer of a run's model source as it is saved there (pad token set as olft set it for
    training), segment ids and all: `export` words its usage text from what this one returns.
    Raises OlftError as `load_tokenizer` does."""
    from olft.loading import read_config, read_tokenizer

    config, source, gguf = read_config(info.cfg.model.model, info.cfg.model.gguf_file)
    tokenizer = read_tokenizer(info.cfg.model.model, source, gguf, config)
    if tokenizer.pad_token is None:  # as olft.loading.set_pad_token does for training
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _any_strategy(run_dir) -> str:
    import json

    results = json.loads((Path(run_dir) / "results.json").read_text()) if (Path(run_dir) / "results.json").is_file() else {}
    return next(iter(results.get("strategies", {})), "olft")


def merge_lora(stack, applied) -> None:
    """Fold every LoRA layer into its base weight, then take the LoRA wrappers out."""
    for path in applied.modules:
        stack.base.get_submodule(path).merge(safe_merge=True)
    applied.remove()


def to_transformers(stack, info: RunInfo, pad_token_id: int | None) -> nn.Module:
    """Wrap `stack.base` (as it is: PEFT modules included) in the family's sequence-classification
    class with olft's head mapped onto that class's head (see the module docstring for which class).
    Raises OlftError where the family has no such class or it has weights olft never tuned."""
    from olft import tasks

    task = tasks.get_task(info.cfg.data.task)
    recorded = info.results.get("pooling") or stack.pooling
    pooling = recorded["rule"] if isinstance(recorded, dict) else recorded  # {"rule": ..., "from": ...}
    pooling = "cls" if pooling == "first" else pooling  # the name older runs recorded
    config = copy.deepcopy(stack.base.config)
    names = list(task.labels) if task.labels else ["score"]
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    config.problem_type = "regression" if task.is_regression else "single_label_classification"
    if pooling == "last":  # for batching in transformers.pipeline: the tokenizer's pad, as olft pads
        config.pad_token_id = pad_token_id
    with torch.device("meta"):
        model = classification_model(config)
    plain = pooling == "cls" and stack.family.pooler and isinstance(getattr(model, "classifier", None), nn.Linear)
    if not plain:  # olft's pooling and biased head on the family's class
        head = next((n for n in ("classifier", "score") if hasattr(model, n)), None)
        if head is None or pooling not in ("cls", "mean", "last"):
            raise OlftError(f"{type(model).__name__} has no classifier/score head to map olft's head onto (or the run's "
                            f"pooling {pooling!r} is unknown), so olft.load cannot map it. Use `olft predict` for this run.")
        config.olft = {"pooling": pooling, "pooler": stack.family.pooler if pooling == "cls" else None, "head": head,
                       "size": stack.output_size, "dropout": stack.head_dropout.p}
        with torch.device("meta"):
            model = olft_class(type(model))(config)
    setattr(model, model.base_model_prefix, stack.base)
    if plain:
        model.classifier = copy.deepcopy(stack.head)
        model.dropout = copy.deepcopy(stack.head_dropout)
    else:
        setattr(model, config.olft["head"], copy.deepcopy(stack.head))
    meta = [n for n, p in model.named_parameters() if p.is_meta]
    if meta:
        # e.g. ModernBERT: its classification class adds a dense+norm head of its own before the classifier,
        # which olft never trained; filling it with anything would change the predictions.
        raise OlftError(f"{type(model).__name__} has weights of its own that olft's tuned model has no counterpart for "
                        f"({meta[0]}, ...: the family's classification class adds layers olft's pooling and head do not "
                        "have), so this run has no transformers form (olft.load, olft export --format peft or merged). "
                        "Use `olft predict --run` on it, or on its `olft export --format olft` folder.")
    return model.eval()


def classification_model(config) -> nn.Module:
    """The family's sequence-classification model built from `config` (weights as the current
    device makes them: call under `torch.device("meta")` to allocate none). Raises OlftError where
    transformers has no such class for the config's model type (CodeGen, Granite), or cannot build
    it, in one line: transformers' own message lists every supported config class."""
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any family transformers cannot build a classifier of
        unknown = isinstance(exc, ValueError) and "Unrecognized configuration class" in str(exc)
        why = "" if unknown else f" ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        raise OlftError(
            f"transformers has no sequence-classification class for model type {getattr(config, 'model_type', '?')!r}{why}, "
            "so this run has no transformers form (olft.load, olft export --format peft or merged). "
            "Use `olft predict --run` on it, or on its `olft export --format olft` folder.") from None


def no_transformers_form(base_config) -> str | None:
    """Why a run on the model of `base_config` (its transformers config) can have no transformers
    form (olft.load, `olft export --format peft|merged`), or None when it can: the family has no
    sequence-classification class, or that class has weights of its own outside its base model
    and its classifier/score head (DistilBERT's `pre_classifier`, DeBERTa-v2's `pooler`,
    ModernBERT's head), which olft never tuned, as `to_transformers` finds after a run. Built on
    the meta device from the config alone: no weight is loaded or allocated. Raises nothing."""
    try:
        with torch.device("meta"):
            model = classification_model(copy.deepcopy(base_config))
    except OlftError as exc:
        return str(exc)
    head = next((n for n in ("classifier", "score") if hasattr(model, n)), None)
    own = [n for n, _ in model.named_parameters()
           if not n.startswith(f"{model.base_model_prefix}.") and not (head and n.startswith(f"{head}."))]
    if head is None:
        return f"{type(model).__name__} has no classifier/score head to map olft's head onto"
    if own:
        return (f"{type(model).__name__} has weights of its own ({own[0].rsplit('.', 1)[0]}) that olft never tunes, "
                "so a run has no transformers form")
    return None


_CLASSES: dict[type, type] = {}


def olft_class(parent: type) -> type:
    """`Olft<parent>`: `parent` (a `...ForSequenceClassification` class) with olft's pooling and
    head (`olft.hfhead.OlftPooling`); the same class `olft export` writes as `olft_head.py`."""
    from olft.hfhead import OlftPooling

    if parent not in _CLASSES:
        _CLASSES[parent] = type(f"Olft{parent.__name__}", (OlftPooling, parent), {"save_pretrained": _save_with_head})
    return _CLASSES[parent]


def _save_with_head(self, save_directory, *args, **kwargs):
    """`save_pretrained` of an `olft_class` model: the parent's, with config.json's `auto_map`
    naming `olft_head.py`, written beside it (the class's code), so that
    `AutoModelForSequenceClassification.from_pretrained(DIR, trust_remote_code=True)` builds this
    class again (without them transformers builds its own, with a new, untrained head)."""
    from olft.export import HEAD_MODULE, head_code

    self.config.auto_map = {"AutoModelForSequenceClassification": f"{HEAD_MODULE}.{type(self).__name__}"}
    type(self).__bases__[1].save_pretrained(self, save_directory, *args, **kwargs)
    (Path(save_directory) / f"{HEAD_MODULE}.py").write_text(head_code(self))


def _probe_inputs(session):
    """PROBES, encoded as the run encodes its examples. Raises OlftError naming the tokenizer
    where it turns one of them (ordinary English words) into no tokens: the tokenizer is at fault."""
    import json

    from olft import tasks
    from olft.data import EmptyTextError

    n = len(session.task.text_fields)
    probes = [texts[:n] for texts in PROBES]
    try:
        return session.encode([tasks.Example(texts, 0) for texts in probes])
    except EmptyTextError as exc:
        empty = ", ".join(json.dumps(probes[i][j]) for i, j in exc.empty)
        raise OlftError(f"The run's tokenizer ({session.cfg.model.model}) turns olft's check sentences ({empty}) into no "
                        "tokens, so the model cannot be compared with olft's own outputs on them. The tokenizer is probably "
                        'broken: check that tokenizer("the movie was good")["input_ids"] gives token ids, and repair or '
                        "replace the model's tokenizer files.") from None


@torch.no_grad()
def _probe_logits(stack, session) -> torch.Tensor:
    from olft.data import collate

    enc = _probe_inputs(session)
    batch = collate(enc, list(range(len(enc))), regression=False)
    stack.eval()
    device = stack.head.weight.device
    return stack(batch.input_ids.to(device), batch.attention_mask.to(device)).float().cpu()


@torch.no_grad()
def check_same(model: nn.Module, session, reference: torch.Tensor, what: str) -> None:
    """OlftError unless `model` gives olft's logits on the probe inputs (atol 1e-4)."""
    from olft.data import collate

    enc = _probe_inputs(session)
    batch = collate(enc, list(range(len(enc))), regression=False)
    device = next(model.parameters()).device
    out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)).logits.float().cpu()
    if out.shape != reference.shape or not torch.allclose(out, reference, atol=1e-4, rtol=0):
        diff = (out - reference).abs().max().item() if out.shape == reference.shape else float("nan")
        raise OlftError(f"{what}: the transformers model's outputs differ from olft's (max |diff| {diff:.2e}); "
                        "refusing to return a model that predicts differently. Use `olft predict` for this run.")
