"""setup -> select -> tune -> evaluate: the pieces of an OLFT run on one loaded model.

`Session` loads the model, task and data once; `tune` puts the PEFT module on some layers,
trains it with the shared loop, evaluates it and takes the module out again, so every strategy
starts from the same frozen base model. Its `select()` (choosing a layer) is `olft.stages`'.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from olft import distributed, precision, tasks
from olft.backbone import count_params
from olft.cache import ActivationCache
from olft.cache import build_caches as build_activation_caches
from olft.config import RunConfig
from olft.data import Encoded, encode, fingerprint, resolve_max_length
from olft.loading import load_stack
from olft.methods import apply_method
from olft.stages import SelectionMixin
from olft.train import fit, loss_fn, predict
from olft.verdicts import plural

log = logging.getLogger(__name__)

# Examples a split needs before one predicted class for all of them counts as a collapse: a working
# classifier on a split with both classes rarely answers alike 10 times running (about 2 ** -9
# on a balanced one), while on 2 or 3 examples it often does.
ONE_CLASS_MIN = 10


@dataclass
class TuneResult:
    layers: list[int]
    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    score: float
    train_seconds: float  # wall seconds: training plus building the training split's cache
    cache_seconds: float
    steps: int
    peft_params: int
    head_params: int
    total_params: int
    modules: list[str]
    weights: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    train_only_params: int = 0
    resumed_at: int = 0
    # wall seconds of the processes before a resume, included in train_seconds (`FitResult`); None:
    # a checkpoint that did not record them, so train_seconds counts only the steps after it
    seconds_before_resume: float | None = 0.0
    logits: dict = field(repr=False, default_factory=dict)  # split -> (n, num_labels) held-out logits
    train_cpu_seconds: float = 0.0  # CPU seconds of this process over train_seconds' span (immune to other load)
    lr: float = 0.0  # the peak learning rate it trained at
    # split -> the one class predicted for every example of it (a model collapsed to a constant,
    # e.g. at too high a learning rate: its score is the class's share, not a learned one)
    one_class: dict[str, str] = field(default_factory=dict)
    # split -> metric -> why it has no value on that split (`tasks.score`: a correlation of labels or
    # predictions that never vary, say); its number in `metrics` is a stand-in (0.0) to rank by, no score
    undefined: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("weights", "logits")}
        return d


def load_examples(cfg: RunConfig, task: tasks.Task, train_split: bool = True) -> tuple[list, dict[str, list]]:
    """(train examples, {eval split: examples}) from a GLUE folder, `datasets`, or files; the
    eval splits are the run's scored samples (`eval_sample`). `train_split=False`: no train
    examples (none read), for scoring saved weights."""
    d = cfg.data
    if d.data_source == "file" and (not d.train_file or not d.validation_file):
        raise tasks.OlftError("--data-source file needs --train-file and --validation-file.")
    splits = ["validation"] if d.data_source == "file" else task.eval_splits
    every = load_split(cfg, task, "train") if train_split else []
    train = tasks.sample_split(every, d.max_train_samples, cfg.train.seed) if train_split else []
    evals = {s: load_split(cfg, task, s) for s in splits}
    if train_split:
        check_splits(cfg, task, every, train, evals)
    return train, {s: eval_sample(cfg, examples) for s, examples in evals.items()}


def check_splits(cfg: RunConfig, task: tasks.Task, every: list, train: list, evals: dict[str, list]) -> None:
    """Mistakes in the data that no error caught, before anything trains. Refused (OlftError): a
    classification task's whole training split (`every`) of one class, where the classifier can
    only learn to answer it and every score would measure that constant; a regression task's whole
    training split of one value, likewise (and its correlations undefined). Warned about, once
    each: the examples drawn (`train`, by --max-train-samples) of one class where the split has
    more; an eval split whose every example is a training example (the validation file is the
    training file, say), whose scores then measure fitting, not generalisation."""
    d = cfg.data
    source = d.train_file if d.data_source == "file" else f"{task.display_name}'s training split"
    if task.is_regression and every and len({float(ex.label) for ex in every}) == 1:
        value = float(every[0].label)
        raise tasks.OlftError(f"{source}: every one of its {len(every)} examples has the score {value:g}: a regression "
                              "trained on one value learns only to predict it, and its correlations (Pearson, Spearman) "
                              f"with labels that never vary are undefined. Add examples with scores other than {value:g}.")  # fmt: skip
    if not task.is_regression and every:
        names = {task.labels[ex.label] for ex in every}
        if len(names) == 1:
            (name,) = names
            others = ", ".join(n for n in task.labels if n != name)
            raise tasks.OlftError(f"{source}: every one of its {len(every)} examples has label {name!r}: a classifier "
                                  "trained on one class learns only to answer it, so its scores would measure nothing. "
                                  f"Add examples of another class ({others}).")  # fmt: skip
    # A --max-train-samples draw of one class (or one value), from a split that has more: warned, not refused
    drawn = {float(ex.label) if task.is_regression else task.labels[ex.label] for ex in train}
    if every and len(drawn) == 1:
        (one,) = drawn
        what, has, learns = ((f"the score {one:g}", "scores that vary", "a regression trained on one value learns only to "
                              "predict it, and its correlations with labels that never vary are undefined")
                             if task.is_regression else
                             (f"label {one!r}", f"{len(task.labels)} classes", "a classifier trained on one class learns "
                              "only to answer it"))  # fmt: skip
        log.warning("train: the %s --max-train-samples %s drew all have %s (%s has %s): %s. Raise --max-train-samples, "
                    "or try another --seed.", plural(len(train), "example"), d.max_train_samples, what, source, has,
                    learns)  # fmt: skip
    seen = {(tuple(ex.texts), ex.label) for ex in every}
    for split, examples in evals.items():
        if examples and all((tuple(ex.texts), ex.label) in seen for ex in examples):
            fix = ("Pass examples held out of --train-file as --validation-file" if d.data_source == "file"
                   else "Check the data: its evaluation split should hold examples its training split does not")
            log.warning("%s: every one of its %d examples is also a training example (%s the training data?), so its "
                        "scores measure how well the training data was fit, not how the model does on new text. %s.",
                        split, len(examples), "is --validation-file" if d.data_source == "file" else "does it repeat",
                        fix)  # fmt: skip
    if not task.is_regression and len(drawn) > 1:  # (one class drawn is warned of above)
        _untaught_labels(task, source, every, train, evals)


def _untaught_labels(task: tasks.Task, source: str, every: list, train: list, evals: dict[str, list]) -> None:
    """Warn, per eval split, of its examples whose label no training example has (an own file of
    two of MNLI's three classes, say, or a --max-train-samples draw that missed one): the head is
    never taught that class, so it almost never predicts it and those examples count as errors,
    with no sign of why in the scores."""
    taught = {ex.label for ex in train}
    for split, examples in evals.items():
        unseen = {task.labels[label]: sum(ex.label == label for ex in examples)
                  for label in sorted({ex.label for ex in examples} - taught)}  # fmt: skip
        if not unseen:
            continue
        drawn = all(name in {task.labels[ex.label] for ex in every} for name in unseen)
        fix = ("Raise --max-train-samples (the whole training split has it), or try another --seed" if drawn
               else f"Add training examples with {'that label' if len(unseen) == 1 else 'those labels'} to {source}")
        log.warning("%s: %s of its %d examples have a label no training example has (%s): the classifier is never taught "
                    "to answer it, so it almost never predicts it and scores them as errors. %s.", split,
                    sum(unseen.values()), len(examples), ", ".join(f"{name!r}: {n}" for name, n in unseen.items()), fix)  # fmt: skip


# Passes over the training data past which --max-steps reads as a slip (an extra zero, the steps of a
# larger dataset): fine-tuning recipes run a few epochs (GLUE: 3 to 20), and at this many the
# linear schedule's warmup (--warmup-ratio of the steps) alone can outlast several epochs.
MAX_STEPS_EPOCHS = 100


def check_max_steps(cfg: RunConfig, n_train: int) -> None:
    """Warn when --max-steps makes every strategy train for more than `MAX_STEPS_EPOCHS` passes
    over its `n_train` training examples (steps x batch size / examples), naming the epochs it
    amounts to: it replaces --epochs, and a run at a million steps would otherwise just run."""
    t = cfg.train
    if not t.max_steps or not n_train:
        return
    epochs = t.max_steps * t.batch_size / n_train
    if epochs > MAX_STEPS_EPOCHS:
        log.warning("--max-steps %d at --batch-size %d is %.0f passes over the %d training examples, for every strategy "
                    "(%.0f warmup steps alone at --warmup-ratio %g). If that is not meant, lower --max-steps or leave it "
                    "out to train for --epochs (now %g).", t.max_steps, t.batch_size, epochs, n_train,
                    t.warmup_ratio * t.max_steps, t.warmup_ratio, t.epochs)  # fmt: skip


def load_split(cfg: RunConfig, task: tasks.Task, split: str) -> list:
    """Every example of one split (with --data-source file: train or validation, from its file).

    Raises OlftError for a missing file or split."""
    d = cfg.data
    if d.data_source == "file":
        return tasks.load_file(task, d.train_file if split == "train" else d.validation_file, d.text_column_list(),
                               d.label_column)
    if d.data_source == "datasets":
        return tasks.load_hf(task, split)
    return tasks.load_glue(task, split, d.glue_dir)


def eval_sample(cfg: RunConfig, examples: list) -> list:
    """The examples of an eval split a run scores: at most --max-eval-samples of them, a random
    subset seeded by the run's --seed, in their original order (all of them when uncapped)."""
    return tasks.sample_split(examples, cfg.data.max_eval_samples, cfg.train.seed)


class Session(SelectionMixin):
    """A loaded model + task + tokenized data, ready to tune any set of layers."""

    def __init__(self, cfg: RunConfig, quiet: bool = False, data: bool = True, train_split: bool = True):
        """`data=False`: the model and tokenizer only (predicting, loading, exporting a run);
        `train_split=False`: the eval splits without the train split (re-scoring a run)."""
        self.cfg = cfg
        self.dist = distributed.context(cfg.train.mixed_precision, cfg.model.dtype)
        self.quiet = quiet or not self.dist.is_main  # one progress bar per job, not per process
        self.task = tasks.get_task(cfg.data.task)
        train, evals = load_examples(cfg, self.task, train_split) if data else ([], {})
        # What the run's examples hash to, per split (results.json's `data_sha256`): a run folder refuses
        # to continue on other data.
        splits = ({"train": train} if data and train_split else {}) | evals
        self.data_sha256 = {split: fingerprint(examples) for split, examples in splits.items()}
        m = cfg.model
        self.stack, self.tokenizer = load_stack(
            m.model, self.task.num_labels, m.gguf_file, m.dtype, m.attn_implementation, m.device_map, m.pooling
        )
        distributed.place(self.stack, self.dist, m.device_map, cfg.train.gradient_checkpointing)
        texts = len(self.task.text_fields)
        self.max_length = resolve_max_length(cfg.data.max_length, self.tokenizer, texts, self.stack.base.config)
        self.train_examples = train
        self.curves = None  # olft.curves.Curves: per-step curves of every piece tuned (set by api.run)
        self.train_enc = self.encode(train) if data and train_split else Encoded([], [], self.tokenizer.pad_token_id)
        self.eval_enc = {s: self.encode(ex) for s, ex in evals.items()}
        # Per split, how many examples lost tokens, and of which text (reported in results.json).
        self.truncated = {"train": self.train_enc.truncated, **{s: e.truncated for s, e in self.eval_enc.items()}}
        for split, cut in self.truncated.items():
            if cut.get("examples"):
                per_text = ", ".join(f"{k} {v}" for k, v in cut.items() if k != "examples")
                log.warning("%s: %d examples were longer than %d tokens and lost tokens (%s; longest first)",
                            split, cut["examples"], self.max_length, per_text)  # fmt: skip

        if data and train_split:
            check_max_steps(cfg, len(self.train_enc))

    def encode(self, examples: list) -> Encoded:
        return encode(self.tokenizer, examples, self.max_length, model_inputs=self.stack.model_inputs)

    @property
    def num_layers(self) -> int:
        return self.stack.num_layers

    def param_counts(self, layers: list[int]) -> int:
        """PEFT parameters of the configured method on `layers`, counted on the real modules."""
        applied = apply_method(self.stack, layers, self.cfg.method)
        n = applied.num_params
        applied.remove()
        return n

    def build_caches(self, layer: int, encs: dict[str, Encoded]) -> dict[str, ActivationCache]:
        if not self.cfg.train.cache or layer == 0:
            return {}
        bs = self.cfg.train.eval_batch_size
        with precision.autocast(self.stack, self.dist):  # the frozen layers run as they would in training
            # Splits without room for a cache (memory, then disk) fall back to the plain forward.
            return build_activation_caches(self.stack, encs, layer, bs)

    def tune(
        self,
        layers: list[int],
        train_enc: Encoded,
        eval_encs: dict[str, Encoded],
        *,
        epochs: float,
        max_steps: int | None,
        desc: str,
        caches: dict[str, ActivationCache] | None = None,
        checkpoint: Path | None = None,
        dist: distributed.Dist | None = None,
        loss_splits: tuple[str, ...] = (),
        lr: float | None = None,
        rate_from: str | None = None,
    ) -> TuneResult:
        """Put the PEFT module on `layers`, train, evaluate on `eval_encs`, take it out.

        `dist` (default: the session's) says which processes share this job: all of them
        (data-parallel), or this one alone (a candidate in candidate-parallel selection).
        `lr`: peak learning rate (default --lr; strategies pass `TrainConfig.lr_for(name)`), and
        `rate_from` the option that set it, for a divergence's fix (`TrainConfig.rate_from(name)`).
        """
        cfg, stack = self.cfg, self.stack
        dist = self.dist if dist is None else dist
        layers = stack.check_layers(list(layers))
        torch.manual_seed(cfg.train.seed)
        stack.head.reset_parameters()
        precision.to_fp32(stack.head.parameters())  # trainable: fp32 whatever --dtype (as the PEFT module)
        applied = apply_method(stack, layers, cfg.method)
        if cfg.model.device_map:
            distributed.align_to_layers(stack, layers)
        try:
            # Training time counts the training split's cache only: the evaluation splits' caches
            # speed up evaluation, which no strategy's training time includes.
            t0, cpu0 = time.perf_counter(), time.process_time()
            if caches is None:
                caches = self.build_caches(min(layers), {"train": train_enc})
                cache_seconds, cache_cpu = time.perf_counter() - t0, time.process_time() - cpu0
                caches.update(self.build_caches(min(layers), eval_encs))
            else:
                cache_seconds, cache_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            lr = cfg.train.lr if lr is None else lr
            params = list(applied.params.values()) + list(stack.head.parameters())
            t = cfg.train
            result = fit(
                stack, params, train_enc, epochs=epochs, max_steps=max_steps, lr=lr, batch_size=t.batch_size,
                seed=t.seed, frozen_below=min(layers), warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                max_grad_norm=t.max_grad_norm, cache=caches.get("train"), desc=desc, quiet=self.quiet,
                checkpoint=checkpoint, checkpoint_every=t.checkpoint_every, dist=dist, grad_accum=t.grad_accum,
                on_step=self.curves.for_piece(desc) if self.curves is not None and dist.is_main else None,
                rate_from=rate_from,
            )  # fmt: skip
            metrics, logits, one_class, undefined = {}, {}, {}, {}
            for split, enc in eval_encs.items():
                with_loss = split in loss_splits
                preds = predict(stack, enc, t.eval_batch_size, caches.get(split), f"{desc} eval", self.quiet, dist,
                                logits=with_loss)  # fmt: skip
                scores = tasks.score(self.task, preds, enc.labels)  # the values training ranks by, and which are undefined
                metrics[split] = scores.values
                if scores.undefined:
                    undefined[split] = scores.undefined
                collapsed = one_class_of(self.task, preds, enc.labels)
                if collapsed is not None:
                    one_class[split] = collapsed
                if with_loss:
                    metrics[split]["loss"] = heldout_loss(preds, enc.labels)
                    logits[split] = preds
            first = next(iter(eval_encs))
            weights = applied.state_dict()
            weights.update({f"head.{k}": v.detach().clone() for k, v in stack.head.state_dict().items()})
            return TuneResult(
                layers=layers,
                metrics=metrics,
                score=tasks.headline(self.task, metrics[first]),
                train_seconds=result.seconds + cache_seconds,
                cache_seconds=cache_seconds,
                steps=result.steps,
                peft_params=applied.num_params,
                head_params=count_params(stack.head),
                total_params=count_params(stack),
                modules=applied.modules,
                weights=weights,
                train_only_params=applied.train_only_params,
                resumed_at=result.resumed_at,
                seconds_before_resume=result.seconds_before_resume,
                logits=logits,
                train_cpu_seconds=result.cpu_seconds + cache_cpu,
                lr=lr,
                one_class=one_class,
                undefined=undefined,
            )
        finally:
            applied.remove()


def one_class_of(task: tasks.Task, preds, labels: list) -> str | None:
    """The class (its name where the task names them) that (n, num_labels) `preds` predict for
    every one of the n examples, where `labels` hold more than one class and n is at least
    `ONE_CLASS_MIN`: a model collapsed to a constant answer, whose score is that class's share.
    None otherwise, and on a regression task. Finished strategies (`TuneResult.one_class`) and
    selection candidates (`Candidate.one_class`) are flagged by this one rule."""
    classes = np.unique(preds.argmax(-1) if preds.ndim == 2 else preds)
    if task.is_regression or len(labels) < ONE_CLASS_MIN or len(set(labels)) < 2 or len(classes) != 1:
        return None
    return task.labels[int(classes[0])] if task.labels else str(classes[0])


def heldout_loss(logits, labels) -> float:
    """Mean training loss (cross-entropy, or MSE for regression) of (n, num_labels) logits.

    Selection can rank candidates by it: unlike accuracy on a few hundred examples it rarely
    ties, and it moves before the predictions do (see SelectionConfig.selection_metric).
    """
    values = torch.as_tensor(logits, dtype=torch.float32)
    golds = torch.as_tensor(labels, dtype=torch.float32 if values.shape[-1] == 1 else torch.long)
    return float(loss_fn(values, golds))


def evaluate_saved(session: Session, layers: list[int], weights: dict[str, torch.Tensor]) -> dict[str, tasks.Scores]:
    """Scores of saved PEFT + head weights on every eval split (plain forward, no cache): every
    metric of the task, and which are undefined on the split (see `tasks.score`)."""
    applied = apply_method(session.stack, layers, session.cfg.method)
    precision.to_fp32(session.stack.head.parameters())  # the dtype it was trained in
    if session.cfg.model.device_map:
        distributed.align_to_layers(session.stack, layers)
    try:
        applied.load_state_dict({k: v for k, v in weights.items() if not k.startswith("head.")})
        session.stack.head.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("head.")})
        out = {}
        for split, enc in session.eval_enc.items():
            bs = session.cfg.train.eval_batch_size  # same autocast (and sharding) as when the run scored it
            preds = predict(session.stack, enc, bs, None, f"{split}", session.quiet, session.dist)
            out[split] = tasks.score(session.task, preds, enc.labels)
        return out
    finally:
        applied.remove()
