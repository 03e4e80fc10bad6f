"""Configuration, split by concern: model, data, method, training, selection, run.

Each field carries its help text; the CLI is generated from these dataclasses (see `cli.py`), so
defaults live here only. The resolved config is saved next to every result.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import numbers
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from olft.errors import OlftError
from olft.layerspec import listed_candidates, parse_layers
from olft.tasks.registry import get_task


def opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


# The largest finite float32: a rate or decay above it becomes inf in the optimizer's float32
# arithmetic (torch then fails with "value cannot be converted to type float without overflow").
FLOAT32_MAX = 3.4028234663852886e38


# Seeds olft takes: numpy's range (np.random.seed, and transformers' set_seed, which calls it). torch
# itself takes up to 2**64 - 1, and failed beyond it only when the final tuning began.
SEED_MAX = 2**32 - 1


def option_key(obj: Any, name: str) -> str:
    """Option `name` of config dataclass `obj` as a config file and the Python API name it, its
    section first ("train.lr"); RunConfig's own options (strategies, out) have none. Every error
    of a config names an option so, as a config file's errors do; the CLI names the flag instead
    where a flag set it (`cli._as_typed`)."""
    section = next((key for key, cls in SECTIONS.items() if cls is type(obj)), None)
    return f"{section}.{name}" if section else name


def _positive(obj: Any, *names: str, allow_none: bool = True) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None and allow_none:
            continue
        # `not value > 0` also refuses NaN, and a YAML file can give .nan or .inf where a flag cannot.
        if not isinstance(value, (int, float)) or not value > 0 or value == float("inf"):
            raise OlftError(f"{option_key(obj, name)} must be a positive number, got {value!r}.")


def _float32(obj: Any, *names: str) -> None:
    """Refuse a value of `names` (already checked to be a number) beyond FLOAT32_MAX: it reaches
    a float32 tensor or the optimizer, which cannot hold it."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and abs(value) > FLOAT32_MAX:
            raise OlftError(f"{option_key(obj, name)} must be at most {FLOAT32_MAX:.4g} (the largest float32, which the optimizer computes in), got {value!r}.")


def strategy_lr_text(value: str | Mapping | None) -> str | None:
    """--strategy-lr as the flag's text: a mapping {strategy: rate}, as a YAML or JSON config file
    may give it (`strategy_lr: {olft: 3e-3, final: 1e-3}`), becomes 'olft=0.003,final=0.001'; a
    string is returned with its entries stripped and empty ones dropped, and an empty one (or
    mapping) as None. The rates are checked by
    `TrainConfig.lr_by_strategy`.

    Raises OlftError for any other value, or a name or rate holding ',' or '=' (it would read as
    another entry). Also the CLI's converter of the option, so a config file's mapping parses.
    """
    if value is None or isinstance(value, str):
        # entries stripped and empty ones dropped ('final=1e-3,,' is final=1e-3): config.json records
        # the rates read, not the typing; "" and {} mean no per-strategy rates, as an absent option
        return ",".join(filter(None, (x.strip() for x in (value or "").split(",")))) or None
    if not isinstance(value, Mapping):
        raise OlftError(f"train.strategy_lr takes name=rate pairs, e.g. olft=3e-3,final=1e-3 (in a config file also a mapping "
                        f"strategy_lr: {{olft: 3e-3, final: 1e-3}}), not {value!r}.")  # fmt: skip
    for name, lr in value.items():
        if any(c in f"{name}{lr}" for c in ",="):
            raise OlftError(f"train.strategy_lr: cannot read {name!r}: {lr!r}; give one strategy and its rate per entry, e.g. {{olft: 3e-3}}.")
    return ",".join(f"{name}={lr}" for name, lr in value.items()) or None


def strategy_lr_entries(text: str | None) -> dict[str, str]:
    """--strategy-lr's text ('olft=3e-3,final=1e-3') as {strategy: its entry as written}, the
    names read as --strategies reads them (`strategy_name`: OLFT is olft, all is full); None or ''
    is {}. The rates are not read (`parse_strategy_lr` does). Raises OlftError naming the bad entry:
    an unknown strategy (olft, final and full have rates of their own), a strategy given twice."""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        name = strategy_name(item.partition("=")[0])
        if name not in ("olft", "final", "full"):
            raise OlftError(f"train.strategy_lr: unknown strategy {name!r} in {item!r}; use olft=, final= or full=, e.g. final=3e-3,full=3e-4.")
        if name in out:
            raise OlftError(f"train.strategy_lr: {name} is given twice in {text!r}; give each strategy once.")
        out[name] = item
    return out


def parse_strategy_lr(text: str | None) -> dict[str, float]:
    """--strategy-lr's text ('olft=3e-3,final=1e-3') as {strategy: peak learning rate}; None or ''
    is {}. Raises OlftError naming the bad entry: those of `strategy_lr_entries`, and a rate not
    positive and finite or past float32."""
    out: dict[str, float] = {}
    for name, item in strategy_lr_entries(text).items():
        value = item.partition("=")[2]
        try:
            lr = float(value)
        except ValueError:
            lr = float("nan")
        if not lr > 0 or lr == float("inf"):
            joined = "; separate entries with ',', e.g. olft=1e-3,final=2e-3" if re.search(r"[;\s]\S*=", value.strip()) else ""
            raise OlftError(f"train.strategy_lr: {item!r} needs a positive number after '=', e.g. {name}=3e-4{joined}.")
        if lr > FLOAT32_MAX:
            raise OlftError(f"train.strategy_lr: {item!r}: a rate must be at most {FLOAT32_MAX:.4g} (the largest float32, "
                            "which the optimizer computes in).")  # fmt: skip
        out[name] = lr
    return out


def candidates_text(value: Any) -> str:
    """--candidates as the flag's text: a config file's or a Python caller's layer number (YAML
    reads `candidates: 3` as a number) or list of them (`[3, 5]`) becomes "3" or "3,5"; text is
    kept as given (parsed, with its errors, by `layerspec`). Raises OlftError for anything else."""
    if isinstance(value, str):
        return value
    layers = value if isinstance(value, list | tuple) else [value]
    if layers and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in layers):
        return ",".join(str(int(v)) for v in layers)
    raise OlftError(f"selection.candidates expects middle, all, a layer, a range 4-9 or a list 3,5,7 (in a config file "
                    f"also a number or a list of numbers), got {value!r}.")


def strategies_text(value: Any) -> str:
    """--strategies as the flag's text: a list of strategy names (olft.run's, a config file's
    `strategies: [olft, final]`) becomes "olft,final", as config.json holds them; text is kept as
    given (its layers are checked against the model by `layerspec.parse_strategies`). Raises
    OlftError for anything else, an unknown strategy name, or a strategy named twice."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        value = ",".join(value)
    if not isinstance(value, str):
        raise OlftError(f"strategies expects names joined by ',' (olft,final,full, layers=3) or, in a config file, a "
                        f"list of them, got {value!r}.")
    # One result of each name per run folder, named as `layerspec.parse_strategies` names it: full
    # and all are one, and so are layers=2+1 and layers=1+2 (layers are read here as there, and an
    # unreadable entry is refused there, against the model).
    for entry in (p.strip() for p in value.split(",") if p.strip()):  # what no model can have is refused here
        if entry.lower().startswith("layers="):
            parse_layers(entry[7:])  # unreadable, or a layer twice; the range is checked against the model
        elif entry.lower() not in ("olft", "final", "full", "all"):
            raise OlftError(f"Unknown strategy '{entry}': use olft, final, full or layers=I+J (or layers=I-J, a range).")
    names = [strategy_name(n) for n in value.split(",") if n.strip()]
    twice = next((i for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        entries = [p.strip() for p in value.split(",") if p.strip()]
        first = entries[names.index(names[twice])]
        same = "" if first.lower() == entries[twice].lower() else f": {first} and {entries[twice]} are one strategy"
        raise OlftError(f"strategies gives {names[twice]} twice ({value}){same}; give each strategy once.")
    return value


# What runs under `olft select`, for its --strategy-lr messages: only olft's rate can apply, and only
# where the selector trains candidates (a proxy alone, as `auto` below 8 candidates, trains none).
SELECT_RATED = "olft select (its candidates, where its selector trains any, train at olft's rate)"


def strategy_name(entry: str, strict: bool = True) -> str:
    """The name `layerspec.parse_strategies` gives a --strategies entry, the one name of a strategy
    however it is spelled: stripped and lowercase, all -> full, layers=2+1 -> layers=1+2. Unreadable
    layers (`parse_layers`: `layers=x`, `layers=2+2`) raise OlftError, or with `strict=False` (a name
    looked up among a run's strategies, which then says it is not there and lists what is) come back
    as read; there ',' joins layers too (`layers=1,2`, as `olft train --layers 1,2` names them: one
    name, so no other strategy can follow). Other names are returned as read."""
    entry = entry.strip().lower()
    if entry == "all":
        return "full"
    if entry.startswith("layers="):
        try:
            return "layers=" + "+".join(map(str, parse_layers(entry[7:], "layers=" if strict else "--layers")))
        except OlftError:
            if strict:
                raise
    return entry


@dataclass
class ModelConfig:
    model: str = opt("minilm-l6", "Built-in alias (minilm-l6, smollm2-135m), a local Hugging Face folder, a .gguf file, or a hub id.")
    gguf_file: str | None = opt(None, "GGUF file name inside the --model folder.")
    dtype: str = opt("fp32", "Weight dtype: fp32, bf16 or fp16.", choices=("fp32", "bf16", "fp16"))
    attn_implementation: str = opt("sdpa", "Attention kernel: sdpa or eager.", choices=("sdpa", "eager"))
    pooling: str = opt("auto", "Pooled representation the head reads: cls (first token), mean (of real tokens), last (last real token), or auto (the checkpoint's own sentence-transformers pooling config where it has one, else last for causal models and cls for encoders).", choices=("auto", "cls", "mean", "last"))
    device_map: str | None = opt(None, "Spread a model too large for one device over the GPUs of one process: auto, balanced, sequential (as in from_pretrained). Single process only.")

    def __post_init__(self) -> None:
        typed_fields(self)


@dataclass
class DataConfig:
    task: str = opt("rte", "GLUE task: sst2, mrpc, qqp, mnli (matched), mnli-mm, qnli, rte, wnli, cola, stsb.")
    glue_dir: str | None = opt(None, "GLUE folder in the original layout (default: $GLUE_DIR).")
    data_source: str | None = opt(None, "Where the data comes from: glue (folder), datasets (the `datasets` library), file (default: file when --train-file or --validation-file is given, else glue).", choices=("glue", "datasets", "file"))
    train_file: str | None = opt(None, "CSV/TSV/JSONL training file, or .json (JSON Lines or one array of objects) (with --data-source file).")
    validation_file: str | None = opt(None, "CSV/TSV/JSONL validation file, or .json (JSON Lines or one array of objects) (with --data-source file).")
    text_columns: str | None = opt(None, "Comma-separated text column names in --train-file and --validation-file, both (default: the task's).")
    label_column: str = opt("label", "Label column name in --train-file and --validation-file, both.")
    max_train_samples: int | None = opt(None, "Use at most this many training examples (random, seeded).")
    max_eval_samples: int | None = opt(None, "Evaluate on at most this many examples of each evaluation split: a random subset drawn with --seed, so runs with different seeds score different examples (under --selection-data validation it is also the set that scores the candidates).")
    max_length: int | None = opt(None, "Truncate inputs to this many tokens, longer text of a pair first (default: 128, or the model's limit if lower; batches are padded only to their longest).")

    def text_column_list(self) -> list[str] | None:
        """--text-columns as a list of names, each stripped ("a, b" names a and b); None when unset."""
        return [c.strip() for c in self.text_columns.split(",")] if self.text_columns else None

    def __post_init__(self) -> None:
        typed_fields(self)
        # An unknown task is refused as the config is made (with a did-you-mean), not at run start; a
        # known one is kept by its canonical name ("SST-2" -> "sst2"), so one task is one config and one folder name.
        self.task = get_task(self.task).name
        if self.text_columns is not None:  # "a, b" names columns a and b, not " b"
            names = self.text_column_list()
            if len(names) > 1 and "" in names:  # "a,", ",b", "a,,b": a column left out while typing
                raise OlftError(f"data.text_columns has an empty column name ({self.text_columns!r}): name each text "
                                "column, joined by ',' (e.g. premise,hypothesis).")
            self.text_columns = ",".join(names) or None
        _positive(self, "max_train_samples", "max_eval_samples", "max_length")
        if self.glue_dir is None:
            self.glue_dir = os.environ.get("GLUE_DIR")
        if self.data_source is None:  # a data file given is the data meant: GLUE beside it would be scored silently
            self.data_source = "file" if self.train_file or self.validation_file else "glue"


@dataclass
class MethodConfig:
    method: str = opt("adapter", "PEFT method: adapter (bottleneck), lora, prefix.", choices=("adapter", "lora", "prefix"))
    placement: str = opt("houlsby", "Adapter placement: houlsby (after attention and MLP) or pfeiffer (after MLP).", choices=("houlsby", "pfeiffer"))
    reduction_factor: int = opt(16, "Adapter bottleneck = hidden size / reduction factor (16, Houlsby's, is the default; 2-64 is usual, outside it a warning names the bottleneck; above the hidden size it is refused).")
    lora_rank: int = opt(8, "LoRA rank.")
    lora_alpha: int = opt(16, "LoRA alpha (scale = alpha / rank).")
    lora_dropout: float = opt(0.0, "LoRA dropout.")
    prefix_length: int = opt(5, "Prefix tuning: number of trainable key/value positions per tuned layer.")
    prefix_reparam: bool = opt(False, "Prefix tuning: produce the prefix with a small MLP while training (folded into plain vectors for saving).")
    prefix_hidden: int = opt(512, "Prefix tuning: hidden width of the reparameterisation MLP.")

    def __post_init__(self) -> None:
        methods = dataclasses.fields(self)[0].metadata["choices"]  # a Python caller's typo, before any data loads
        if self.method not in methods:
            close = difflib.get_close_matches(str(self.method), methods, n=1)
            raise OlftError(f"Unknown method {self.method!r}: use one of {', '.join(methods)}."
                            + (f" Did you mean {close[0]!r}?" if close else ""))
        typed_fields(self)
        _positive(self, "reduction_factor", "lora_rank", "lora_alpha", "prefix_length", "prefix_hidden")
        if not 0 <= self.lora_dropout < 1:  # a probability; checked here, before the model loads
            raise OlftError(f"method.lora_dropout must be in [0, 1), got {self.lora_dropout}.")

    @property
    def name(self) -> str:
        return self.method


@dataclass
class TrainConfig:
    epochs: float = opt(3.0, "Training epochs (final tuning and baselines).")
    max_steps: int | None = opt(None, "Stop after this many optimizer steps (overrides --epochs).")
    lr: float = opt(1e-3, "Peak learning rate (PEFT module and head).")
    strategy_lr: str | None = opt(None, "Per-strategy peak learning rates overriding --lr, e.g. final=3e-3,full=3e-4 (names: olft, final, full; selection's trained candidates use olft's); in a config file also a mapping {olft: 3e-3, final: 1e-3}. Lets each strategy train at the rate a grid chose for it.", type=strategy_lr_text, type_name="str, or a mapping in a config file")
    batch_size: int = opt(16, "Training batch size: the effective batch per optimizer step, over all processes and accumulation steps.")
    eval_batch_size: int = opt(64, "Evaluation batch size.")
    warmup_ratio: float = opt(0.06, "Fraction of steps with linear warm-up.")
    weight_decay: float = opt(0.0, "AdamW weight decay.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 = off).")
    seed: int = opt(42, "Random seed (data order, head and module initialisation, subsets).")
    cache: bool = opt(True, "Cache the frozen layers' output below the tuned layer (exact; turns dropout off there).")
    checkpoint_every: int | None = opt(None, "Save the full training state every N steps so a killed run resumes mid-training.")
    grad_accum: int = opt(1, "Gradient accumulation: each batch of --batch-size examples (the effective batch, over all processes) runs as this many micro-batches per process.")
    mixed_precision: str = opt("auto", "Autocast of fp32 or bf16 weights: no, bf16, or auto (the launcher's --mixed_precision, else bf16 on a GPU that has it, else no; under --dtype fp16, no: fp16 weights run their matmuls in fp16 with loss scaling). bf16 with --dtype fp16 is refused.", choices=("auto", "no", "bf16"))
    report_to: str | None = opt(None, "Also log every step's loss, learning rate and gradient norm to a tracker (through accelerate): tensorboard, wandb or mlflow.", choices=(None, "tensorboard", "wandb", "mlflow"))
    gradient_checkpointing: bool = opt(False, "Recompute the activations of the layers above the tuned one during backward (non-reentrant) to save memory.")

    def __post_init__(self) -> None:
        typed_fields(self)
        _positive(self, "epochs", "max_steps", "lr", "batch_size", "eval_batch_size", "checkpoint_every", "grad_accum")
        if not 0 <= self.warmup_ratio < 1:
            raise OlftError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        for name in ("weight_decay", "max_grad_norm"):  # 0 is allowed: no decay, no clipping
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise OlftError(f"train.{name} must be 0 or a positive number, got {value!r}.")
        _float32(self, "lr", "weight_decay", "max_grad_norm")
        if not 0 <= self.seed <= SEED_MAX:  # torch.manual_seed overflowed mid-run, after the selection
            raise OlftError(f"{option_key(self, 'seed')} must be a whole number from 0 to {SEED_MAX} (the range numpy and "
                            f"transformers' set_seed take, so the seed can be reused there), got {self.seed!r}.")
        self.strategy_lr = strategy_lr_text(self.strategy_lr)  # saved as the flag's text, however it was given
        self.lr_by_strategy()  # refuse a malformed --strategy-lr before anything loads

    def lr_by_strategy(self) -> dict[str, float]:
        """--strategy-lr as {strategy: lr} (`parse_strategy_lr`); raises OlftError naming the bad entry."""
        return parse_strategy_lr(self.strategy_lr)

    def lr_for(self, strategy: str) -> float:
        """Peak learning rate of `strategy` (olft, final, full, or layers=...: --lr)."""
        return self.lr_by_strategy().get(strategy, self.lr)

    def rate_from(self, strategy: str) -> str | None:
        """`strategy` where its rate (`lr_for`) is its --strategy-lr entry, None where it is --lr: what
        a divergence's fix names (`precision.diagnose`), so it never says to lower an --lr not used."""
        return strategy if strategy in self.lr_by_strategy() else None


@dataclass
class SelectionConfig:
    candidates: str = opt("middle", "Candidate layers: middle (the middle third), all, a range 4-9, a list 3,5,7, or both: 2-4,9.", type=candidates_text, type_name="str")
    selector: str = opt("auto", "How a layer is chosen (default: auto, the selection benchmark's lowest regret within 30 % of exhaustive's cost; see docs/selection.md): exhaustive (tune every candidate for --selection-steps), halving (successive halving: short runs for all, keep the better half, double the steps; the last two get --selection-steps), probe (linear probe on each layer's frozen output, no training), gradient (relative gradient norm of each module at initialisation, no training), probe-halving (probe keeps the better half, then halving), auto (the probe, then probe-halving over its top N//4 of N candidates: two both train for --selection-steps, more start with shorter halving rungs; about 30 % of exhaustive's cost at most; the probe alone below 8 candidates). See docs/selection.md.", choices=("exhaustive", "halving", "probe", "gradient", "probe-halving", "auto"))
    selection_data: str = opt("train", "Score candidates on a held-out part of train (no leakage) or on validation (the paper's protocol).", choices=("train", "validation"))
    selection_train_samples: int = opt(1000, "Examples candidates are trained (or probes fitted) on.")
    selection_eval_samples: int = opt(400, "Examples candidates are scored on (disjoint from their training examples); --selection-data train only: under validation the validation split scores them, limited by --max-eval-samples.")
    selection_steps: int | None = opt(None, "Optimizer steps each candidate trains for (the finalists of halving get this many); unset: --selection-epochs over the fit set (189 steps at the defaults: 1,000 examples in batches of 16, 3 epochs).")
    selection_epochs: float = opt(3.0, "Epochs over the fit set each candidate trains for when --selection-steps is unset (one epoch of 500 left every candidate predicting the majority class on SST-2).")
    selection_metric: str = opt("score", "Rank candidates by score (the task's headline metric, as the paper does; held-out loss breaks ties, lower layer after that) or by loss (held-out loss, lower wins; not under --selector gradient, which scores none).", choices=("score", "loss"))
    selection_max_steps: int | None = opt(None, "Cap on the optimizer steps each candidate first trains for (the --selection-epochs budget, or --selection-steps); the adaptive retraining of tied finalists (--selection-adaptive) doubles those steps past it.")
    selection_adaptive: int = opt(1, "When the top candidates are within --equivalence-threshold standard errors of the winner on held-out loss (or a runner-up is clearly below it: score and loss disagree), retrain just those with twice the steps, up to this many times (0: never; they are then reported as equivalent). Not under --selector auto, whose training is sized to its cost bound.")
    equivalence_threshold: float = opt(1.0, "Candidates whose paired held-out loss differs from the winner's (either way) by fewer standard errors than this are reported as equivalent to it (as are those whose mean held-out loss differs from the winner's by under 0.001 times the constant predictor's, however many standard errors apart).")
    probe_keep: int | None = opt(None, "Candidates the probe passes on to trained halving under --selector probe-halving (unset: the better half, rounded up). 2 trains the probe's top two for the full --selection-steps with no short rung: cost about 2/N of exhaustive over N candidates (docs/selection.md).")
    gradient_batches: int = opt(8, "Training batches the gradient selector sums its gradients over.")
    selection_parallel: str = opt("candidates", "With several processes: candidates (each process tunes whole candidates alone; scores identical to one process) or data (each candidate data-parallel).", choices=("candidates", "data"))

    def __post_init__(self) -> None:
        typed_fields(self)
        _positive(self, "selection_train_samples", "selection_eval_samples", "selection_epochs", "selection_max_steps",
                  "selection_steps", "equivalence_threshold", "gradient_batches", "probe_keep")
        # --probe-keep under another selector is unused, not contradictory: `ignored_options` warns of it.
        if not isinstance(self.selection_adaptive, int) or self.selection_adaptive < 0:
            raise OlftError(f"selection.selection_adaptive must be 0 or more, got {self.selection_adaptive!r}.")
        listed_candidates(self.candidates)  # unreadable text, at once; the layers against the model once it is read


def check_selection_metric(s: SelectionConfig) -> None:
    """Refuse (OlftError) --selection-metric loss under --selector gradient, which scores no held-out
    loss to rank. Called where a selection is asked for, before anything trains, not as a config is
    read: an older olft accepted the pair, and its folders' config.json must still read (evaluate,
    predict, export)."""
    if s.selector == "gradient" and s.selection_metric == "loss":
        raise OlftError("--selection-metric loss cannot rank under --selector gradient: it scores no held-out loss. "
                        "Use --selection-metric score, or another --selector (probe, exhaustive, ...).")


def precision_conflict(dtype: str, mixed_precision: str, given: str = "--mixed-precision bf16") -> str | None:
    """Why weights of `dtype` (--dtype) cannot run under autocast `mixed_precision` (resolved: no or
    bf16, as `given` names it), or None. Autocast exists to run fp32 weights' matmuls in half
    precision: over bf16 weights bf16 autocast changes nothing, but over fp16 weights it rounds
    each to bf16 (fp16's precision lost, its range kept) and on CPU the two dtypes cannot meet in
    one layer ("mixed dtype (CPU)"). fp16 autocast is refused on its own (`distributed`)."""
    if dtype == "fp16" and mixed_precision == "bf16":
        return (f"--dtype fp16 cannot run under bf16 mixed precision ({given}): autocast would round the fp16 weights "
                "to bf16 for every matmul, and on a CPU the two dtypes cannot meet in one layer. Use --dtype bf16 "
                "(weights and matmuls in bf16), --dtype fp32 with --mixed-precision bf16 (fp32 weights, bf16 matmuls), "
                "or --mixed-precision no (fp16 weights and matmuls, with loss scaling).")
    return None


# Options that may name a local file or folder: made absolute in a run folder's config.json.
PATH_FIELDS = ("model.model", "data.glue_dir", "data.train_file", "data.validation_file")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    strategies: str = opt("olft,final,full", "Strategies to run: olft, final, full, and/or layers=I+J (explicit layers; a range: layers=I-J); in a config file also a list.", type=strategies_text, type_name="str, or a list in a config file")
    out: str | None = opt(None, "Run folder (default: runs/<model>-<task>-<method>).")

    def __post_init__(self) -> None:
        for name, section in SECTIONS.items():  # a group given as a mapping of its options, as from_dict takes it
            value = getattr(self, name)
            if isinstance(value, Mapping):  # through from_dict: an unknown option is named, with the closest one
                setattr(self, name, getattr(RunConfig.from_dict({name: value}), name))
            elif not isinstance(value, section):
                raise OlftError(f"RunConfig's {name} must be a {section.__name__} (or a mapping of its options), not {value!r}.")
        typed_fields(self)
        # Across sections, so here: refused as the options are read, before anything loads.
        if (why := precision_conflict(self.model.dtype, self.train.mixed_precision)) is not None:
            raise OlftError(why)

    def check(self) -> None:
        """Type and check every option again, as when the config was made (each section's
        `__post_init__`, then this one's): an attribute set afterwards (`cfg.train.lr = "abc"`)
        is refused with OlftError, not met by the run mid-way. `olft.run`, `select_layer` and
        `info` call it first."""
        for name in SECTIONS:
            section = getattr(self, name)
            if dataclasses.is_dataclass(section):
                section.__post_init__()
        self.__post_init__()

    def with_absolute_paths(self, keys: tuple[str, ...] = PATH_FIELDS) -> RunConfig:
        """A copy with every local path (PATH_FIELDS, or those of `keys`) made absolute, as
        config.json records it: a relative path means the directory the run began in, so from any
        other one the run folder's config would name files that are not there. A value that is no
        local path (a model alias or hub id, a path still missing) is kept as given; symlinks are
        not resolved."""
        out = copy.deepcopy(self)
        for key in keys:
            section, name = key.split(".")
            value = getattr(getattr(out, section), name)
            if value and os.path.exists(value):
                setattr(getattr(out, section), name, os.path.abspath(value))
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The RunConfig a mapping of groups holds (`to_dict`'s shape, a run folder's config.json:
        `{"model": {"model": ...}, "train": {"lr": 1e-3}, "out": ...}`); groups left out keep their
        defaults. Raises OlftError naming an unknown group or option (with the closest known name)
        or a group that is not a mapping; each option's own value is typed and checked by its
        dataclass (`typed_fields`)."""
        if not isinstance(data, Mapping):
            raise OlftError(f"A config is a mapping of groups (model, data, method, train, selection), not {type(data).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                close = difflib.get_close_matches(str(key), sorted(names), n=1)
                raise OlftError(f"Unknown config group or option {key!r}." + (f" Did you mean {close[0]!r}?" if close else
                                f" Known: {', '.join(sorted(names))}."))
            if key not in SECTIONS:
                kwargs[key] = value
                continue
            if not isinstance(value, Mapping):
                raise OlftError(f"Config group {key!r} must be a mapping of its options ({key}: {{...}}), not {value!r}.")
            fields = {f.name for f in dataclasses.fields(SECTIONS[key])}
            for name in value:
                if name not in fields:
                    close = difflib.get_close_matches(str(name), sorted(fields), n=1)
                    raise OlftError(f"Unknown option {key}.{name}." + (f" Did you mean {key}.{close[0]}?" if close else
                                    f" {key} takes: {', '.join(sorted(fields))}."))
            kwargs[key] = SECTIONS[key](**value)
        return cls(**kwargs)


def typed_fields(obj: Any) -> None:
    """Give each option of config dataclass `obj` (a section, or RunConfig's own options) the type
    the CLI's parser gives it from a config file (`_typed`), in place: every section calls it first
    in `__post_init__`, so `RunConfig(...)`, `TrainConfig(seed=...)`, `RunConfig.from_dict` and a
    config file are checked alike, before any model or data loads. Raises OlftError naming the
    option (its config key, as the CLI names a config file's), what it takes and the value."""
    for f in dataclasses.fields(obj):
        if "help" in f.metadata:  # an option (RunConfig's sections are not)
            setattr(obj, f.name, _typed(type(obj), f, getattr(obj, f.name), option_key(obj, f.name)))


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _typed(cls: type, f: Any, value: Any, where: str) -> Any:
    """`value` of option `f` (a field) of dataclass `cls` as the CLI's parser would take it from a
    config file: its converter where it has one (`opt(type=...)`), else its annotation's type, then
    one of its choices where it has them. A number written as text (PyYAML's safe_load reads `1e-3`
    as a string) becomes the number, a whole float (or its text) an int, a numpy scalar a Python
    number, a path its text, a list of strategy names their comma-separated text."""
    convert = f.metadata.get("type")
    if convert is not None:
        return convert(value)
    kind, optional = option_kind(_hints(cls)[f.name])
    if value is None and optional:
        return None
    out = as_kind(kind, value)
    if out is None:  # as the CLI names a config file's bad value: "train.lr expects a number, got 'abc'"
        raise OlftError(f"{where} expects {KIND_WORDS[kind]}{' (or null)' * optional}, got {value!r}.")
    choices = [c for c in f.metadata.get("choices") or () if c is not None]
    if choices and out not in choices:
        raise OlftError(choice_error(where, out, choices))
    return out


# What an option of each kind takes, as its errors say.
KIND_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def option_kind(hint: Any) -> tuple[type, bool]:
    """(the kind, whether None is allowed) of an option annotated `hint` (`int`, `float | None`)."""
    args = set(typing.get_args(hint)) or {hint}
    return next(iter(args - {type(None)})), type(None) in args


def choice_error(key: str, value: Any, choices: list[str]) -> str:
    """The message for option `key` (a config key, "selection.selector") given `value` outside
    `choices`, with the closest choice: shared by the dataclasses and the CLI's parse errors."""
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f"{key} expects one of {', '.join(choices)}, got {value!r}." + (f" Did you mean {close[0]!r}?" if close else "")


def as_kind(kind: type, value: Any) -> Any:
    """`value` as a `kind` (bool, int, float or str) where it reads as one (see `_typed`), else None."""
    if isinstance(value, bool) or kind is bool:  # True is no number, and 1 or "yes" no switch
        return value if kind is bool and isinstance(value, bool) else None
    if kind is int and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)  # exactly: through a float, 99999999999999999999 would read as 1e20
    if kind in (int, float) and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if kind is int and isinstance(value, numbers.Real) and float(value).is_integer():
        return int(value)
    if kind is float and isinstance(value, numbers.Real):
        return float(value)
    if kind is str and isinstance(value, str | os.PathLike):
        return os.fspath(value)  # a pathlib.Path for out or a model folder reads as its text
    return None


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "method": MethodConfig,
    "train": TrainConfig,
    "selection": SelectionConfig,
}

# The names transformers' TrainingArguments (and run_glue's arguments) or PEFT's configs give olft's
# options, where olft's differ: a config file or flag using one is answered with olft's name.
OTHER_NAMES = {
    "learning_rate": "train.lr", "num_train_epochs": "train.epochs", "per_device_train_batch_size": "train.batch_size",
    "train_batch_size": "train.batch_size", "per_device_eval_batch_size": "train.eval_batch_size",
    "gradient_accumulation_steps": "train.grad_accum", "save_steps": "train.checkpoint_every",
    "r": "method.lora_rank", "num_virtual_tokens": "method.prefix_length", "prefix_projection": "method.prefix_reparam",
    "encoder_hidden_size": "method.prefix_hidden", "peft_type": "method.method",
    "model_name_or_path": "model.model", "torch_dtype": "model.dtype", "task_name": "data.task",
    "max_seq_length": "data.max_length", "output_dir": "out",
}


# -- options that only some selectors, methods or commands use ---------------------------------
TRAINED = ("exhaustive", "halving", "probe-halving", "auto")  # selectors that train candidates
_TRAINS = "it trains no candidate; a trained selector (exhaustive, halving, probe-halving, auto) uses it"
# {grouped option: (what uses it, the values of that choice that do, why the others ignore it / what to use instead)}.
# One row per option that a choice can leave unused; an option absent here is used by every choice.
APPLIES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "selection.selection_steps": ("selector", TRAINED, _TRAINS),
    "selection.selection_epochs": ("selector", TRAINED, _TRAINS),
    "selection.selection_max_steps": ("selector", TRAINED, _TRAINS),
    # Only a trained stage spreads candidates over processes; a proxy runs whole on each process.
    "selection.selection_parallel": ("selector", TRAINED, "it trains no candidate to spread over processes; "
                                     "a trained selector (exhaustive, halving, probe-halving, auto) uses it"),
    # The threshold is a number of standard errors of paired per-example held-out losses: the gradient
    # selector scores no held-out example, so it has no gap to compare (and records no equivalent layers).
    "selection.equivalence_threshold": ("selector", ("exhaustive", "halving", "probe", "probe-halving", "auto"),
                                        "it scores no held-out example, so no gap to the winner is measured; "
                                        "any other --selector (probe, exhaustive, ...) reports equivalent layers by it"),
    "selection.selection_adaptive": ("selector", ("exhaustive", "halving", "probe-halving"),
                                     "auto sizes its training to a cost bound, probe and gradient train nothing; "
                                     "--selector exhaustive, halving or probe-halving retrains tied finalists"),
    "selection.probe_keep": ("selector", ("probe-halving",), "only probe-halving passes a set number of the probe's layers on "
                             "(auto passes its own quarter); pass --selector probe-halving to set it"),
    "selection.gradient_batches": ("selector", ("gradient",), "only the gradient selector sums gradients; pass --selector gradient to use it"),
    "data.train_file": ("data_source", ("file",), "only --data-source file reads data files; pass --data-source file, or "
                        "leave --data-source out (a data file given makes it file)"),
    "data.validation_file": ("data_source", ("file",), "only --data-source file reads data files; pass --data-source file, "
                             "or leave --data-source out (a data file given makes it file)"),
    "data.text_columns": ("data_source", ("file",), "GLUE and `datasets` have the task's own columns; --data-source file "
                          "reads them from --train-file and --validation-file"),
    "data.label_column": ("data_source", ("file",), "GLUE and `datasets` have the task's own columns; --data-source file "
                          "reads it from --train-file and --validation-file"),
    "method.reduction_factor": ("method", ("adapter",), "only adapters have a bottleneck; pass --method adapter to use it"),
    "method.placement": ("method", ("adapter",), "only adapters are placed; pass --method adapter to use it"),
    "method.lora_rank": ("method", ("lora",), "pass --method lora to use it"),
    "method.lora_alpha": ("method", ("lora",), "pass --method lora to use it"),
    "method.lora_dropout": ("method", ("lora",), "pass --method lora to use it"),
    "method.prefix_length": ("method", ("prefix",), "pass --method prefix to use it"),
    "method.prefix_reparam": ("method", ("prefix",), "pass --method prefix to use it"),
    "method.prefix_hidden": ("method", ("prefix",), "pass --method prefix to use it"),
}


def option_shown(given: Iterable[str] | Mapping[str, str | None], key: str) -> str:
    """How a warning names option `key` of `given`: a mapping's value where it has one (the CLI's
    "run.yaml: selection.selector" for an option a config file set), else its flag (--selector)."""
    if isinstance(given, Mapping) and given.get(key):
        return given[key]
    return "--" + key.split(".")[-1].replace("_", "-")


def ignored_options(cfg: RunConfig, given: Iterable[str] | Mapping[str, str | None], command: str = "run") -> list[str]:
    """One warning line for each option of `given` (grouped keys, "selection.selector") that `cfg`
    leaves unused under `olft command`: one its selector or method does not read (`APPLIES`), or
    any selection option under `train`, or under `run` with strategies that select no layer
    (`select` always selects: it has no --strategies), or one another option replaces
    (`_overridden`: --epochs under --max-steps, ...). The count-dependent case of --selector
    auto and of one candidate are `count_ignored_options`'s. An option only some
    choices read is a user's intent the run would silently drop, so it is named with why and
    what would use it (not refused: a shared command line or a run folder's config.json has them).
    A mapping `given` names each option as `option_shown` does (a config file's by file and key)."""
    lines = []
    selects = command == "select" or "olft" in [strategy_name(s) for s in cfg.strategies.split(",")]  # select has no --strategies
    for key in sorted(given):
        section = key.split(".", 1)[0] if "." in key else ""
        flag = option_shown(given, key)
        if section == "selection" and command == "train":
            lines.append(f"{flag} is ignored by `olft train`: it tunes the given --layers and selects no layer; "
                         "`olft run` or `olft select` choose a layer.")
            continue
        if section == "selection" and not selects:
            lines.append(f"{flag} is ignored: --strategies {cfg.strategies} selects no layer (olft does); "
                         "add olft to --strategies, or drop it.")
            continue
        if key in APPLIES:
            choice, users, why = APPLIES[key]
            value = getattr(getattr(cfg, section), choice)
            if value not in users:
                lines.append(f"{flag} is ignored under --{choice.replace('_', '-')} {value}: {why}.")
                continue
        if (line := _overridden(cfg, key, command)) is not None:
            lines.append(f"{flag} is ignored: {line}.")
    return lines


def _overridden(cfg: RunConfig, key: str, command: str) -> str | None:
    """Why option `key` has no effect given another option of `cfg` that decides the same length
    of training, or None. Exact, as `train.fit` and `stages.SelectionMixin.selection_steps` count steps: a step
    count replaces the epochs (it is no cap on them), and a cap at or above the step count
    it caps never binds (the steps are only ever known for --selection-steps)."""
    t, s = cfg.train, cfg.selection
    if key == "train.epochs" and t.max_steps and command != "select":  # select trains no final model
        return f"--max-steps {t.max_steps} sets how long each strategy trains (it replaces --epochs); drop one of them"
    if key == "selection.selection_epochs" and s.selection_steps:
        return f"--selection-steps {s.selection_steps} sets how long each candidate trains (it replaces --selection-epochs); drop one of them"
    if key == "selection.selection_max_steps" and s.selection_steps and s.selection_max_steps >= s.selection_steps:
        return (f"it caps each candidate's steps, and --selection-steps {s.selection_steps} is not above it; "
                "lower it, or drop it")
    return None


# The options above that only a trained selection stage reads: auto leaves them unused where the
# probe alone decides, which depends on the model's layer count (`count_ignored_options`).
TRAINING_OPTIONS = tuple(key for key, (_, users, _) in APPLIES.items() if users == TRAINED)
# What stays in use with one candidate layer, where no selection runs: the candidates themselves, and
# the selector (results.json records it); every other selection option only steers a selection.
_ONE_CANDIDATE_USED = ("selection.candidates", "selection.selector")


def count_ignored_options(cfg: RunConfig, given: Iterable[str] | Mapping[str, str | None], candidates: int) -> list[str]:
    """Warning lines, in `ignored_options`'s style, for the options of `given` that the number of
    candidate layers leaves unused; `ignored_options` cannot tell: the count depends on the model's
    layers, known once its config (or the model) has loaded, so the caller passes it then.

    With one candidate, under any selector, one line names every selection option of `given` that
    `ignored_options` has not named already: that layer is the choice and no selection runs
    (`runselection.one_candidate`), so nothing reads them. Under --selector auto on `candidates` too
    few to train any (`select.auto_keep`), the probe runs alone: one line for each option that only
    trained candidates read (TRAINING_OPTIONS). [] otherwise; options named as `option_shown` does.
    Raises nothing."""
    from olft.select import auto_keep  # numpy: not loaded with the config

    if candidates == 1:
        used = sorted(k for k in given if k.startswith("selection.") and k not in _ONE_CANDIDATE_USED
                      and not ignored_options(cfg, {k}, "select"))  # each option is named once
        return [f"{', '.join(option_shown(given, k) for k in used)} "
                f"{'is' if len(used) == 1 else 'are'} ignored with one candidate layer: it is the choice, "
                "and no selection runs."] if used else []
    if cfg.selection.selector != "auto" or auto_keep(candidates):
        return []
    least = next(k for k in range(candidates + 1, 10 * candidates + 100) if auto_keep(k))  # auto's rule, not a copy of it
    return [f"{option_shown(given, key)} is ignored under --selector auto with {candidates} candidates: "
            f"below {least} it runs the probe alone and trains none; --selector exhaustive, halving or probe-halving "
            f"trains candidates, as auto does on {least} or more --candidates."
            for key in sorted(given) if key in TRAINING_OPTIONS]


def option_keys(sections: Iterable[str] = tuple(SECTIONS)) -> set[str]:
    """The grouped keys ("train.lr") of the options of `sections` (names of SECTIONS): the keys of
    `RunConfig.to_dict()`, of a config file, and of `given` (`ignored_options`). KeyError for a
    section that is none of SECTIONS."""
    return {f"{s}.{f.name}" for s in sections for f in dataclasses.fields(SECTIONS[s])}


def given_options(cfg: RunConfig) -> set[str]:
    """The grouped options ("method.lora_rank") whose value in `cfg` differs from a default
    RunConfig's: what a Python caller set, as `ignored_options` and `count_ignored_options` read
    `given` (the CLI passes the options typed instead). Raises nothing."""
    default = RunConfig()
    return {f"{section}.{f.name}" for section, kind in SECTIONS.items() for f in dataclasses.fields(kind)
            if getattr(getattr(cfg, section), f.name) != getattr(getattr(default, section), f.name)}
