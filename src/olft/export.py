"""`olft export`: hand a run's tuned model to other tools.

Formats, and what each can hold:
- `peft` (LoRA runs): the peft
  library's adapter folder, `adapter_config.json` (`layers_to_transform`, `target_modules`,
  `modules_to_save` for the head, `base_model_name_or_path` = the `base/` folder saved beside
  it, so it loads offline) + `adapter_model.safetensors` + the tokenizer + peft's model card
  (`README.md`: `base_model` is the hub id where olft knows one, never a local path; a local model is
  named by its folder's name). Loads with
  `peft.AutoPeftModelForSequenceClassification.from_pretrained(DIR)`. That path is absolute (peft
  resolves a relative one against the working directory, not DIR), so a copy moved elsewhere loads
  as `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(DIR/base, trust_remote_code=True), DIR)`.
- `merged` (LoRA runs): LoRA folded into the weights, a transformers folder
  for `AutoModelForSequenceClassification.from_pretrained(DIR)`.
  (Both with `trust_remote_code=True` where the folder carries `olft_head.py`, see below.)
  Neither holds a family whose classification class adds layers of its own that olft never
  tuned (DistilBERT's `pre_classifier`, DeBERTa-v2's `pooler`, ModernBERT's head): refused, naming
  `olft predict`; `olft info` tells beforehand (`hfmodel.no_transformers_form`).
- `olft` (every method): the run's config, results and the strategy's weights, loadable with
  `olft.load(DIR)` and `olft predict --run DIR`. Adapter and prefix modules have no plain
  transformers form, and the `adapters` library (AdapterHub) requires transformers 4.x while
  olft runs on transformers 5, so this is their export.

Runs whose pooling no plain transformers class does (mean pooling, e.g. minilm-l6; the last
real token with a biased head, decoders' default; see `olft.hfmodel`) get `olft_head.py` in their
`peft`/`merged` folders: `olft.hfhead` plus the subclass of the family's class named in
config.json's `auto_map`. Load them with `trust_remote_code=True` (without it transformers builds
its own class, which pools and scores differently). Every `peft`/`merged` export is reloaded the
way a user would load it and compared with olft's outputs (atol 1e-4) before it is put in place.

Every folder says how to use it (`usage_text`; peft: its model card's "How to Get Started"
section; merged and olft: a README.md): how to load it, how olft formed its inputs (a decoder
takes a pair as one text, the two joined by a newline, cut to the run's max length by the README
code's `pair_text` as olft cut it; an encoder the tokenizer's pair encoding),
the labels in output order, the task and the run's validation metrics.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from olft.errors import OlftError, stop_on_sigterm
from olft.outputs import check_folder_output
from olft.predict import RunInfo, open_run, tuned_session

FORMATS = ("peft", "merged", "olft")


def _outside_run_folders(out: Path) -> None:
    """OlftError when `out` lies in an olft run folder: a folder olft did not write there would
    make the run folder refuse `--overwrite` and count as foreign work."""
    from olft.ownership import saved_config

    for folder in (out.resolve(), *out.resolve().parents):
        if saved_config(folder) is not None:
            raise OlftError(f"--output {out} is inside the run folder {folder}; olft keeps its run folders to its own files "
                            "(a folder there would block --overwrite). Pass --output a folder outside it.")


def default_format(method: str) -> str:
    """The export format of a run of `method` when none is asked for: peft for LoRA (the standard
    form, which peft loads), olft for the adapter and prefix, which only olft's own format holds."""
    return "peft" if method == "lora" else "olft"


def export(run_dir: str | Path, output: str | Path, strategy: str | None = None, format: str | None = None) -> Path:
    """Write `strategy` of the run folder `run_dir` to the new folder `output` in `format` (no
    `strategy`: olft, or the run's only strategy; no `format`: `default_format` of its method).

    Raises OlftError for an unfinished run, a strategy not in it, an `output` that is a file or a non-empty folder (an empty one is written into), one that
    cannot be created (a file above it, an unwritable folder), or a method/family the format
    cannot hold (naming the formats that can). SIGTERM raises `Terminated` (as Ctrl-C raises
    KeyboardInterrupt) once the temporary folder beside `output` is removed.
    """
    if format is not None and format not in FORMATS:
        raise OlftError(f"Unknown export format {format!r}: use one of {', '.join(FORMATS)}.")
    info = open_run(run_dir, strategy)
    format = format or default_format(info.cfg.method.method)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise OlftError(f"Output {out} is a file; an export is a folder. Pass --output a new folder.")
    if out.exists() and any(out.iterdir()):
        raise OlftError(f"Output {out} already exists and is not empty. Pass --output a new folder.")
    method = info.cfg.method.method
    if format in ("peft", "merged") and method != "lora":
        raise OlftError(f"--format {format} holds LoRA runs only; this run used {method!r}. "
                        "Use --format olft (loadable with olft.load and olft predict).")
    _outside_run_folders(out)
    check_folder_output(out)  # before the model loads
    with stop_on_sigterm():  # SIGTERM stops it as Ctrl-C does: the temporary folder goes (kill -9: the next export's rmtree)
        _write_export(info, out, format)
    return out


def _write_export(info: RunInfo, out: Path, format: str) -> None:
    """Write the export into a temporary folder beside `out`, then rename it into place; however
    it stops, the temporary folder is removed. Raises OlftError where `out` cannot be made."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an export killed outright (kill -9)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise OlftError(f"Cannot create --output {out} ({exc.strerror or exc}). Pass --output a new folder in a writable one.") from None
    try:
        if format == "olft":
            _export_olft(info, tmp, out.name)
        else:
            _export_transformers(info, tmp, format, out.name)
        try:
            tmp.rename(out)  # replaces an empty folder; fails if something was written there meanwhile
        except OSError as exc:
            raise OlftError(f"Cannot put the export in place at {out} ({exc.strerror}). Pass --output a new folder.") from None
        if format == "peft":
            _point_at_base(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_olft(info: RunInfo, tmp: Path, name: str) -> None:
    """The run folder reduced to one strategy (config, results, weights), model path made absolute,
    and a README.md on using it."""
    from olft.hfmodel import load, source_tokenizer
    from olft.loading import read_config

    config = json.loads((info.folder / "config.json").read_text())
    model = Path(config["model"]["model"]).expanduser()
    if model.exists():  # a local folder or file: keep it findable from anywhere
        config["model"]["model"] = str(model.resolve())
    results = json.loads((info.folder / "results.json").read_text())
    results["strategies"] = {info.strategy: results["strategies"][info.strategy]}
    results["strategy_names"] = [info.strategy]
    (tmp / "weights").mkdir()
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.copy2(info.weights, tmp / "weights" / info.weights.name)
    # worded from the source's tokenizer: olft.load_tokenizer drops segment ids the model lacks, and
    # the usage code says so where they would reach it
    usage = usage_text(info, source_tokenizer(info), "olft", False, name,
                       read_config(info.cfg.model.model, info.cfg.model.gguf_file)[0])
    try:  # the README's code uses olft.load: say so where it cannot build this family's model
        load(info.folder, info.strategy)
    except OlftError as exc:
        usage = (f"`olft.load` cannot turn this run into a transformers model: {exc}\n\nUse it with "
                 f"`olft predict --run {name} --text ...` (or `--input FILE --output FILE`), which reads this folder.\n")
    _write_readme(tmp / "README.md", usage)


def _export_transformers(info: RunInfo, tmp: Path, format: str, name: str) -> None:
    from olft.hfmodel import _probe_logits, merge_lora, to_transformers

    session, applied = tuned_session(info, quiet=True)
    stack = session.stack
    reference = _probe_logits(stack, session)
    if format == "merged":
        merge_lora(stack, applied)
        lora = {}
    else:
        lora = applied.state_dict()
        applied.remove()
    model = to_transformers(stack, info, session.tokenizer.pad_token_id)
    custom = hasattr(model.config, "olft")  # olft's pooling class: its save_pretrained writes its code, olft_head.py
    if format == "merged":
        model.save_pretrained(tmp, state_dict=_own_weights(model))
        session.tokenizer.save_pretrained(tmp)
        _write_readme(tmp / "README.md", usage_text(info, session.tokenizer, "merged", custom, name, stack.base.config))
        _verify(tmp, "merged", session, reference, custom)
        return
    _save_peft(model, lora, info, session, tmp, model.config.olft["head"] if custom else "classifier")
    _add_usage(tmp / "README.md", usage_text(info, session.tokenizer, "peft", custom, name, stack.base.config))
    _verify(tmp, "peft", session, reference, custom)


HEAD_MODULE = "olft_head"


def _own_weights(model) -> dict:
    """`model`'s state dict less the weights its class does not build: the base model olft tuned is
    the family's plain one, which may hold modules the classification class leaves out (RoBERTa's
    pooler: RobertaForSequenceClassification builds its base without it, and olft never uses it),
    so saving them would make transformers list them as UNEXPECTED on every load. The class is
    built on the meta device from the config alone: no weight is allocated."""
    import torch

    with torch.device("meta"):
        own = set(type(model)(model.config).state_dict())
    return {k: v for k, v in model.state_dict().items() if k in own}


def head_code(model) -> str:
    """`olft_head.py` for `model` (an `olft.hfmodel.olft_class` instance): olft.hfhead's source,
    then the subclass of the family's class that config.json's `auto_map` names."""
    from olft import hfhead

    parent = type(model).__bases__[1]  # Olft<parent>(OlftPooling, parent)
    return (Path(hfhead.__file__).read_text() + f"\n\nfrom transformers import {parent.__name__}  # noqa: E402\n\n\n"
            f"class {type(model).__name__}(OlftPooling, {parent.__name__}):\n    pass\n")


def _save_peft(model, lora: dict, info: RunInfo, session, tmp: Path, head: str) -> None:
    """Base model (plain, with olft's head) in `base/`, the LoRA adapter + head in the folder."""
    from peft import LoraConfig, get_peft_model

    base = tmp / "base"
    model.save_pretrained(base, state_dict=_own_weights(model))  # an olft_class model writes olft_head.py and its auto_map too
    session.tokenizer.save_pretrained(base)
    session.tokenizer.save_pretrained(tmp)
    m, family = info.cfg.method, session.stack.family
    config = LoraConfig(
        task_type="SEQ_CLS", r=m.lora_rank, lora_alpha=m.lora_alpha, lora_dropout=m.lora_dropout,
        target_modules=list(family.lora_targets), layers_to_transform=list(info.layers),
        layers_pattern=family.layers_pattern, modules_to_save=[head],
    )  # fmt: skip
    peft_model = get_peft_model(model, config)
    prefix = f"base_model.model.{model.base_model_prefix}."
    state = peft_model.state_dict()
    missing = [k for k in lora if prefix + k not in state]
    if missing or len(lora) != sum(".lora_" in k for k in state):
        raise OlftError(f"The run's LoRA weights do not fit peft's layout ({(missing or ['count'])[0]}); use --format olft.")
    peft_model.load_state_dict({prefix + k: v for k, v in lora.items()}, strict=False)
    peft_model.peft_config["default"].base_model_name_or_path = str(base.resolve())  # final path set by `export`
    peft_model.save_pretrained(tmp)
    _name_base_model(tmp / "README.md", info)


def _name_base_model(card_path: Path, info: RunInfo) -> None:
    """Name the base model in the model card peft wrote as other machines can find it.

    peft names the folder the model loaded from (for an alias, a folder in site-packages or
    olft's cache) as `base_model` and in a `base_model:adapter:` tag. The card's metadata names the
    hub id where olft knows one (`loading.hub_id`), else no base model; its text names the model
    as the run was given it.
    """
    from huggingface_hub import ModelCard

    from olft.loading import hub_id

    card = ModelCard.load(card_path)
    repo = hub_id(info.cfg.model.model)
    card.data.base_model = repo
    tags = [t for t in card.data.tags or [] if not t.startswith("base_model:")]
    card.data.tags = tags + ([f"base_model:adapter:{repo}"] if repo else [])
    line = f"- **Finetuned from model:** {_base_model_words(info)}; its weights are in `base/`"
    text, found = re.subn(r"^- \*\*Finetuned from model.*$", lambda _: line, card.text, count=1, flags=re.M)
    card.text = text if found else f"{card.text.rstrip()}\n\n{line}\n"
    card.save(card_path)


# -- the folder's README: how to load it, form its inputs and read its outputs -------------------

EXAMPLE_TEXTS = ("A man is sleeping on a bench.", "Nobody is sleeping.")
USAGE_HEADING = "## How to Get Started with the Model"  # peft's card has this section, left unfilled
# Per format: imports, the model, the tokenizer ({trc}: trust_remote_code where the folder carries olft_head.py).
LOADERS = {
    "peft": ("from peft import AutoPeftModelForSequenceClassification\nfrom transformers import AutoTokenizer",
             "AutoPeftModelForSequenceClassification.from_pretrained(DIR{trc}).eval()", "AutoTokenizer.from_pretrained(DIR)"),
    "merged": ("from transformers import AutoModelForSequenceClassification, AutoTokenizer",
               "AutoModelForSequenceClassification.from_pretrained(DIR{trc}).eval()", "AutoTokenizer.from_pretrained(DIR)"),
    "olft": ("import olft", "olft.load(DIR)  # a transformers model, checked against olft's outputs", "olft.load_tokenizer(DIR)"),
}


def usage_text(info: RunInfo, tokenizer, format: str, custom: bool, name: str, config) -> str:
    """How to use the export `name` of `info` in `format` (markdown, no heading): the task, the
    labels in output order, the run's validation metrics, how olft formed the inputs, and code
    that loads the folder and predicts (`custom`: the folder carries olft_head.py; `config`: the
    base model's transformers config).

    A decoder's pair is one text, the two joined by `data.PAIR_JOINER`: `tokenizer(a, b)` would
    encode an input the model was never tuned on, so the text and the code spell the join out.
    A model with one segment embedding whose tokenizer gives segment ids (`families.no_segment_ids`)
    was fed none, so the code asks for none (`return_token_type_ids=False`): the tokenizer's id 1
    for a pair's second text is an index that model does not have.
    """
    from olft import tasks
    from olft.data import PAIR_JOINER, joins_pairs
    from olft.families import no_segment_ids

    task, results = tasks.get_task(info.cfg.data.task), info.results
    fields, n = list(task.text_fields), results.get("max_length")  # also the code's names: valid Python
    # the run's own --text-columns where it named them: the columns its files held, and those
    # `olft predict --input` reads from an exported folder
    columns = info.cfg.data.text_column_list() or fields
    joined = len(fields) > 1 and joins_pairs(tokenizer)
    segments = "token_type_ids" in (getattr(tokenizer, "model_input_names", None) or ())
    unsegmented = segments and no_segment_ids(config)
    drop = ", return_token_type_ids=False" if unsegmented else ""
    if joined:
        plain = f" + {json.dumps(PAIR_JOINER)} + ".join(fields)
        call = f"pair_text({', '.join(fields)})"
        how = (f"one text, the two joined by a newline, `tokenizer({plain})`: this model's tokenizer has no separator "
               f"token, and `tokenizer({', '.join(fields)})` would encode an input it was never tuned on")  # fmt: skip
        long = ("a longer pair lost tokens from the end of its longer text first, each text cut at a token boundary, "
                "before the two were joined; the code's `pair_text` does that (so does `olft predict`)")
    else:
        call = ", ".join(fields) + (f", truncation=True, max_length={n}" if n else "")
        parts = ("its separator token but no segment ids: the model has one segment embedding, and the tokenizer's "
                 "id 1 for the second text is an index it does not have" if unsegmented else "its separator token and segment ids")
        how = (f"`tokenizer({', '.join(fields)}{drop})`, the tokenizer's pair encoding ({parts})"
               if len(fields) > 1 else f"`tokenizer({fields[0]}{drop})`, the text alone")  # fmt: skip
        long = f"`truncation=True, max_length={n}` cuts a longer input as olft did{' (longer text first)' if len(fields) > 1 else ''}"
    labels = list(task.labels) if task.labels else None
    low, high = task.score_range or (None, None)
    lines = [
        f"- **Task:** {task.display_name} (GLUE); input text{'s' if len(fields) > 1 else ''} {', '.join(f'`{f}`' for f in columns)}.",
        "- **Labels, in output order:** " + ", ".join(f"{i} `{label}`" for i, label in enumerate(labels)) + "." if labels
        else f"- **Output:** one number, the predicted score{f' (on a {low:g} to {high:g} scale; not clipped to it)' if task.score_range else ''}.",
        f"- **Tuned by olft:** the PEFT module on layer{'s' if len(info.layers) > 1 else ''} "
        f"{', '.join(map(str, info.layers))} (strategy `{info.strategy}`, method `{info.cfg.method.method}`) of {_base_model_words(info)}.",
        *_validation_lines(results, info.strategy),
        f"- **Inputs:** {how}.",
        *([f"- **Long inputs:** olft tuned and scored the model on at most {n} tokens; {long}."] if n else []),
        f"- **Batches:** {'form each pair with `pair_text`, then ' if joined else ''}`tokenizer([...]{'' if joined or len(fields) < 2 else ', [...]'}, "
        f"padding=True{drop}, return_tensors=\"pt\")` after `tokenizer.padding_side = \"right\"`, as olft padded (the model pools "
        "by `attention_mask`).",
    ]  # fmt: skip
    trc = ", trust_remote_code=True" if custom else ""
    if custom:
        lines.append("- **`trust_remote_code=True`** loads `olft_head.py`, olft's pooling and head; without it transformers "
                     "builds its own class, which pools and scores differently.")  # fmt: skip
    if format == "peft":
        lines.append("- **A copy moved elsewhere** (`adapter_config.json` names `base/` by absolute path) loads as "
                     f"`PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(DIR + \"/base\"{trc}), DIR)`.")
    if format == "olft":
        lines.append("- **`olft predict --run DIR --text ...`** (or `--input FILE`) does all of this for you.")
        # This folder holds the tuned weights only: the frozen base model is read from where config.json names it.
        if Path(info.cfg.model.model).expanduser().exists():  # a local folder (an alias is found by name anywhere)
            lines.append(f"- **Not self-contained:** the base model is read from `{Path(info.cfg.model.model).expanduser().resolve()}` "
                         "(config.json's `model.model`), which must stay there, or config.json be edited to where it went; "
                         "a LoRA run's `--format merged` or `peft` export carries the base weights with it.")
    code = _usage_code(format, trc, name, fields, call + drop, labels, PAIR_TEXT_CODE.format(max_length=n or 10**9) if joined else "")
    return "\n".join(lines) + "\n\n```python\n" + code + "```\n"


def _validation_lines(results: dict, strategy: str) -> list[str]:
    """The strategy's metrics on each evaluation split, as results.json records them."""
    counts = results.get("eval_examples") or {}
    return [f"- **Validation score** (`{split}` split, {counts.get(split, '?')} examples): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) + "."
            for split, metrics in (results["strategies"][strategy].get("metrics") or {}).items()]  # fmt: skip


# A decoder's pair as olft forms it (`data.encode`: `_cut_joined` with `longest_first`), for a
# README: shorter than olft's code, equal on every pair (tests/test_export.py checks it).
PAIR_TEXT_CODE = '''

def pair_text(a, b, max_length={max_length}):
    """The pair as olft fed it: a + "\\n" + b, at most max_length tokens. When longer, the longer
    text loses tokens from its end first (longest-first), each cut at a token boundary."""
    ends = [[e for _, e in tokenizer(t, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
            for t in (a, b)]
    n = [len(e) for e in ends]
    budget = max_length - (len(tokenizer(a + "\\n" + b)["input_ids"]) - sum(n))
    while budget >= 2:
        short = min(n)
        keep_long = short if short > budget else max(short, budget - short)
        keep_short = short
        if short + keep_long > budget:
            keep_short, keep_long = budget // 2, budget - budget // 2
        keep = [keep_long, keep_short] if n[0] > n[1] else [keep_short, keep_long]
        text = "\\n".join(t if k >= len(e) else t[: e[k - 1]] for t, e, k in zip((a, b), ends, keep))
        excess = len(tokenizer(text)["input_ids"]) - max_length
        if excess <= 0:
            return text
        budget -= excess  # tokens merged differently across the cut: cut again, shorter
    raise ValueError(f"the pair does not fit {{max_length}} tokens with a token of each text")
'''


def _usage_code(format: str, trc: str, name: str, fields: list[str], call: str, labels: list[str] | None,
                helper: str = "") -> str:
    """Python that loads the export `name` from the folder above it and prints one prediction
    (`helper`: code defined after the tokenizer, e.g. `PAIR_TEXT_CODE`)."""
    imports, model, tokenizer = (x.format(trc=trc) for x in LOADERS[format])
    texts = ", ".join(json.dumps(t) for t in EXAMPLE_TEXTS[: len(fields)])
    read = (f"    probs = model(**enc).logits.softmax(-1)[0].tolist()\nprint(dict(zip({json.dumps(labels)}, probs)))"
            if labels else "    score = model(**enc).logits[0, 0].item()\nprint(score)")  # fmt: skip
    return (f"import torch\n{imports}\n\nDIR = {json.dumps(name)}  # this folder's path\nmodel = {model}\n"
            f"tokenizer = {tokenizer}\n{helper}\n{', '.join(fields)} = {texts}\n"
            f"enc = tokenizer({call}, return_tensors=\"pt\")\nwith torch.no_grad():\n{read}\n")


def _write_readme(path: Path, usage: str) -> None:
    """README.md of a `merged` or `olft` export: what it is, and `usage_text`."""
    path.write_text(f"# A classifier tuned with olft (Optimal Layer Fine-Tuning)\n\n{USAGE_HEADING}\n\n{usage}")


def _add_usage(card_path: Path, usage: str) -> None:
    """Fill the usage section of the model card peft wrote (appended where it has none)."""
    from huggingface_hub import ModelCard

    card = ModelCard.load(card_path)
    section = rf"^{re.escape(USAGE_HEADING)}\n.*?(?=^## |\Z)"
    body = f"{USAGE_HEADING}\n\n{usage}\n"
    text, found = re.subn(section, lambda _: body, card.text, count=1, flags=re.M | re.S)
    card.text = without_placeholders(text if found else f"{card.text.rstrip()}\n\n{body}")
    card.save(card_path)


# Lines of huggingface_hub's model card template (which peft fills) that say nothing of this model:
# its "[More Information Needed]" placeholders, as a line or a `- **Field:**` bullet, its
# instructions to the card's author (HTML comments), a bold label alone (`**BibTeX:**`), and its
# stock sentences.
_PLACEHOLDER = re.compile(r"^\s*(-\s+\*\*[^*]+\*\*\s*)?\[More Information Needed\]\s*$|^\s*\*\*[^*]+:\*\*\s*$")
_STOCK = ("Carbon emissions can be estimated using the [Machine Learning Impact calculator]",
          "Users (both direct and downstream) should be made aware of the risks",
          "Use the code below to get started with the model.")


def without_placeholders(text: str) -> str:
    """A model card's markdown `text` less what its template left unfilled: each `_PLACEHOLDER`
    line, HTML comment and `_STOCK` sentence, then each heading left with nothing under it before
    the next heading of its level or above (repeated, so that a section all of whose subsections
    went goes too), blank lines collapsed. What a card holds of the model (olft's usage section,
    peft's framework versions, any field filled in) is kept."""
    # peft appends its framework versions as a subsection of the template's last section (Model
    # Card Contact), which would then stay as an empty heading: they are a section of their own
    text = re.sub(r"^### Framework versions$", "## Framework versions", text, flags=re.M)
    lines, fenced = [], False  # inside a ``` block nothing is a heading or a placeholder
    for line in re.sub(r"<!--.*?-->", "", text, flags=re.S).splitlines():
        fenced ^= line.startswith("```")
        if fenced or line.startswith("```") or not (_PLACEHOLDER.match(line) or line.strip().startswith(_STOCK)):
            lines.append((line.rstrip(), 0 if fenced else len(re.match(r"(#{1,6} )?", line)[0].strip())))
    changed = True
    while changed:
        changed = False
        for i, (_, level) in enumerate(lines):
            if not level:
                continue
            j = next((j for j in range(i + 1, len(lines)) if lines[j][0].strip()), len(lines))
            if j == len(lines) or 0 < lines[j][1] <= level:
                del lines[i:j]
                changed = True
                break
    return re.sub(r"\n{3,}", "\n\n", "\n".join(line for line, _ in lines)).strip() + "\n"


def _base_model_words(info: RunInfo) -> str:
    """The run's base model as a README names it: the hub id where olft knows one, else the local
    folder's (or file's) name, never its path: a path on the machine that exported means nothing
    where the folder is read, and the weights travel with the export (`base/`, or `olft.load`)."""
    from olft.loading import ALIASES, hub_id

    model, gguf = info.cfg.model.model, info.cfg.model.gguf_file
    repo = hub_id(model)
    if model in ALIASES:
        named, gguf = f"{repo} (olft's built-in `{model}`)", ALIASES[model].gguf_file
    else:
        named = repo or f"`{Path(model).expanduser().resolve().name}` (a local model, not on the model hub)"
    return named + (f", file {gguf} dequantized" if gguf else "")


def _verify(folder: Path, format: str, session, reference, custom: bool) -> None:
    """Load the export as a user would and compare with olft's outputs."""
    from olft.hfmodel import check_same

    if format == "merged":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=custom)
    else:
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(folder, trust_remote_code=custom)
    check_same(model.eval(), session, reference, f"export --format {format}")


def _point_at_base(out: Path) -> None:
    """The adapter's base model is the `base/` folder beside it (absolute: loads from anywhere)."""
    path = out / "adapter_config.json"
    data = json.loads(path.read_text())
    data["base_model_name_or_path"] = str((out / "base").resolve())
    data["modules_to_save"] = list(dict.fromkeys(data.get("modules_to_save") or []))  # peft's SEQ_CLS repeats its own
    path.write_text(json.dumps(data, indent=2) + "\n")


def add_export_options(p) -> None:
    p.add_argument("--run", required=True, help="Run folder written by `olft run` or `olft train`.")
    p.add_argument("--strategy", default=None, help="Which tuned model: olft, final, full, or a strategy name such as layers=0+2 "
                   "(default: olft, or the run's only strategy).")
    p.add_argument("--format", default=None, choices=FORMATS,
                   help="peft: adapter folder for peft (LoRA); merged: LoRA folded into a plain transformers folder; "
                        "olft: olft's own format (every method), for olft.load and olft predict "
                        "(default: peft for a LoRA run, olft for an adapter or prefix run).")
    p.add_argument("--output", required=True, help="New folder to write.")


def export_command(args) -> int:
    fmt = args.format or default_format(open_run(args.run, args.strategy).cfg.method.method)
    out = export(args.run, args.output, args.strategy, fmt)
    print(f"wrote {out} ({fmt}{'' if args.format else ', the default for its method'}); its README.md says how to load it "
          "and form its inputs")
    custom = any(out.rglob(f"{HEAD_MODULE}.py"))
    trc = ", trust_remote_code=True" if custom else ""  # in each recipe: a moved copy without it loads the wrong class
    if fmt == "peft":  # adapter_config.json names base/ by absolute path: what peft's Auto class needs
        print(f"AutoPeftModelForSequenceClassification.from_pretrained(DIR{trc}) loads it here; a copy moved elsewhere loads as "
              f"PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(DIR + '/base'{trc}), DIR)")
    if custom:
        print(f"load it with trust_remote_code=True: {HEAD_MODULE}.py holds olft's pooling and head (without it, "
              "transformers builds its own class, which pools and scores differently)")
    return 0
