"""`olft export`: hand a run's tuned model to other tools.

Formats, and what each can hold:
- `peft` (LoRA runs): the peft
  library's adapter folder, `adapter_config.json` (`layers_to_transform`, `target_modules`,
  `modules_to_save` for the head, `base_model_name_or_path` = the `base/` folder saved beside
  it, so it loads offline) + `adapter_model.safetensors` + the tokenizer + peft's model card
  (`README.md`: `base_model` is the hub id where olft knows one, never a local path). Loads with
  `peft.AutoPeftModelForSequenceClassification.from_pretrained(DIR)`. That path is absolute (peft
  resolves a relative one against the working directory, not DIR), so a copy moved elsewhere loads
  as `PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(DIR/base, trust_remote_code=True), DIR)`.
- `merged` (LoRA runs): LoRA folded into the weights, a transformers folder
  for `AutoModelForSequenceClassification.from_pretrained(DIR)`.
  (Both with `trust_remote_code=True` where the folder carries `olft_head.py`, see below.)
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
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from olft.errors import OlftError
from olft.predict import RunInfo, check_folder_output, open_run, tuned_session

FORMATS = ("peft", "merged", "olft")


def _outside_run_folders(out: Path) -> None:
    """OlftError when `out` lies in an olft run folder: a folder olft did not write there would
    make the run folder refuse `--overwrite` and count as foreign work."""
    from olft.runfolder import saved_config

    for folder in (out.resolve(), *out.resolve().parents):
        if saved_config(folder) is not None:
            raise OlftError(f"--output {out} is inside the run folder {folder}; olft keeps its run folders to its own files "
                            "(a folder there would block --overwrite). Pass --output a folder outside it.")


def export(run_dir: str | Path, output: str | Path, strategy: str | None = None, format: str = "peft") -> Path:
    """Write `strategy` of the run folder `run_dir` to the new folder `output` in `format` (no
    `strategy`: olft, or the run's only strategy).

    Raises OlftError for an unfinished run, a strategy not in it, an existing `output`, one that
    cannot be created (a file above it, an unwritable folder), or a method/family the format
    cannot hold (naming the formats that can).
    """
    if format not in FORMATS:
        raise OlftError(f"Unknown export format {format!r}: use one of {', '.join(FORMATS)}.")
    info = open_run(run_dir, strategy)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OlftError(f"Output {out} already exists and is not empty. Pass --output a new folder.")
    method = info.cfg.method.method
    if format in ("peft", "merged") and method != "lora":
        raise OlftError(f"--format {format} holds LoRA runs only; this run used {method!r}. "
                        "Use --format olft (loadable with olft.load and olft predict).")
    _outside_run_folders(out)
    check_folder_output(out)  # before the model loads
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise OlftError(f"Cannot create --output {out} ({exc.strerror or exc}). Pass --output a new folder in a writable one.") from None
    try:
        if format == "olft":
            _export_olft(info, tmp)
        else:
            _export_transformers(info, tmp, format)
        try:
            tmp.rename(out)  # replaces an empty folder; fails if something was written there meanwhile
        except OSError as exc:
            raise OlftError(f"Cannot put the export in place at {out} ({exc.strerror}). Pass --output a new folder.") from None
        if format == "peft":
            _point_at_base(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _export_olft(info: RunInfo, tmp: Path) -> None:
    """The run folder reduced to one strategy (config, results, weights), model path made absolute."""
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


def _export_transformers(info: RunInfo, tmp: Path, format: str) -> None:
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
    custom = hasattr(model.config, "olft")  # olft's pooling class: the folder carries its code
    if custom:
        model.config.auto_map = {"AutoModelForSequenceClassification": f"{HEAD_MODULE}.{type(model).__name__}"}
    if format == "merged":
        _save_model(model, tmp, custom)
        session.tokenizer.save_pretrained(tmp)
        _verify(tmp, "merged", session, reference, custom)
        return
    _save_peft(model, lora, info, session, tmp, model.config.olft["head"] if custom else "classifier", custom)
    _verify(tmp, "peft", session, reference, custom)


HEAD_MODULE = "olft_head"


def head_code(model) -> str:
    """`olft_head.py` for `model` (an `olft.hfmodel.olft_class` instance): olft.hfhead's source,
    then the subclass of the family's class that config.json's `auto_map` names."""
    from olft import hfhead

    parent = type(model).__bases__[1]  # Olft<parent>(OlftPooling, parent)
    return (Path(hfhead.__file__).read_text() + f"\n\nfrom transformers import {parent.__name__}  # noqa: E402\n\n\n"
            f"class {type(model).__name__}(OlftPooling, {parent.__name__}):\n    pass\n")


def _save_model(model, folder: Path, custom: bool) -> None:
    model.save_pretrained(folder)
    if custom:
        (folder / f"{HEAD_MODULE}.py").write_text(head_code(model))


def _save_peft(model, lora: dict, info: RunInfo, session, tmp: Path, head: str, custom: bool) -> None:
    """Base model (plain, with olft's head) in `base/`, the LoRA adapter + head in the folder."""
    from peft import LoraConfig, get_peft_model

    base = tmp / "base"
    _save_model(model, base, custom)
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

    from olft.loading import ALIASES, hub_id

    card = ModelCard.load(card_path)
    model, gguf = info.cfg.model.model, info.cfg.model.gguf_file
    repo = hub_id(model)
    card.data.base_model = repo
    tags = [t for t in card.data.tags or [] if not t.startswith("base_model:")]
    card.data.tags = tags + ([f"base_model:adapter:{repo}"] if repo else [])
    if model in ALIASES:
        named, gguf = f"{repo} (olft's built-in `{model}`)", ALIASES[model].gguf_file
    else:
        named = repo or f"`{model}` (a local model, not on the model hub)"
    named += f", file {gguf} dequantized" if gguf else ""
    line = f"- **Finetuned from model:** {named}; its weights are in `base/`"
    text, found = re.subn(r"^- \*\*Finetuned from model.*$", lambda _: line, card.text, count=1, flags=re.M)
    card.text = text if found else f"{card.text.rstrip()}\n\n{line}\n"
    card.save(card_path)


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
    p.add_argument("--run", required=True, help="Run folder written by `olft run`.")
    p.add_argument("--strategy", default=None, help="Which tuned model: olft, final, full, or a strategy name such as layers=0+2 "
                   "(default: olft, or the run's only strategy).")
    p.add_argument("--format", default="peft", choices=FORMATS,
                   help="peft: adapter folder for peft (LoRA); merged: LoRA folded into a plain transformers folder; "
                        "olft: olft's own format (every method), for olft.load and olft predict.")
    p.add_argument("--output", required=True, help="New folder to write.")


def export_command(args) -> int:
    out = export(args.run, args.output, args.strategy, args.format)
    print(f"wrote {out} ({args.format})")
    custom = any(out.rglob(f"{HEAD_MODULE}.py"))
    trc = ", trust_remote_code=True" if custom else ""  # in each recipe: a moved copy without it loads the wrong class
    if args.format == "peft":  # adapter_config.json names base/ by absolute path: what peft's Auto class needs
        print(f"AutoPeftModelForSequenceClassification.from_pretrained(DIR{trc}) loads it here; a copy moved elsewhere loads as "
              f"PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(DIR + '/base'{trc}), DIR)")
    if custom:
        print(f"load it with trust_remote_code=True: {HEAD_MODULE}.py holds olft's pooling and head (without it, "
              "transformers builds its own class, which pools and scores differently)")
    return 0
