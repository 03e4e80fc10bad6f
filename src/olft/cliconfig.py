"""The `olft` command's config files, checked before parsing so that a typo names its fix.

`--config FILE` (YAML or JSON; a run folder's config.json is one) is checked against the keys
each subcommand takes (`COMMANDS`), a key given twice or unknown is refused with a did-you-mean,
keys only other subcommands take are skipped with one log line, and the command line is
rewritten for the parser: short flags to grouped ones, every --config right after the
subcommand so that flags override it.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path
from typing import NamedTuple

from olft.config import OTHER_NAMES, SECTIONS, option_keys, parse_strategy_lr, strategy_lr_entries, strategy_lr_text
from olft.errors import OlftError

COMMANDS = {
    "info": ("Show a model's family, layers, middle bucket and PEFT parameter counts.", ("model", "method")),
    "run": ("Select a layer, tune it, and compare with final-layer and all-layer tuning.", tuple(SECTIONS)),
    "select": ("Only score the candidate layers and name the best one.", tuple(SECTIONS)),
    "train": ("Tune the PEFT module on explicit --layers (no selection).", tuple(SECTIONS)),
}


# One option of each group and a value, for the message that a group was written as a value.
GROUP_EXAMPLES = {"model": ("model", "minilm-l6"), "data": ("task", "rte"), "method": ("method", "lora"),
                  "train": ("lr", "1e-3"), "selection": ("selector", "probe")}


def _known_keys(command: str) -> set[str]:
    keys = option_keys(COMMANDS[command][1])
    flags = {"quiet", "verbose", "debug"} | ({"overwrite", "out"} if command != "info" else set())
    flags |= {"strategies"} if command == "run" else set()  # select and train have none: see build_parser
    return keys | flags | ({"layers"} if command == "train" else set())  # what --print_config writes


def _flatten(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and k in SECTIONS:
            out += _flatten(v, f"{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def _load_unique(text: str):
    """YAML (or JSON) `text` loaded safely, refusing a key given twice in one mapping: PyYAML and
    jsonargparse keep the last silently, so `{olft: 3e-3, olft: 1e-3}` would drop a rate unseen."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True) if key_node.tag != "tag:yaml.org,2002:merge" else None
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise OlftError(f"{key!r} is given twice in one mapping (line {key_node.start_mark.line + 1}); give it once.")
                seen.add(key)
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=UniqueKeys)  # noqa: S506 (a SafeLoader)


def _load_unique_json(text: str):
    """JSON `text` loaded strictly, refusing a key given twice in one object (as `_load_unique`)."""

    def unique(pairs: list[tuple[str, object]]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise OlftError(f"{key!r} is given twice in one object; give it once.")
            seen[key] = value
        return seen

    return json.loads(text, object_pairs_hook=unique)


class CheckedConfig(NamedTuple):
    """A config file as `check_config_file` read it."""

    keys: list[str]  # the options it sets for the command, as grouped keys ("train.lr")
    skipped: list[str]  # the keys only other subcommands take
    text: str | None  # the file's text without the skipped keys, for the parser (which refuses them); None if none is
    data: dict  # the whole file as parsed, skipped keys included


def check_config_file(command: str, path: str) -> CheckedConfig:
    """Config file `path` read for `olft command` (`CheckedConfig`): the options it sets, the keys
    it skips, the text the parser reads, and the parsed mapping, so later checks need not read
    the file again.

    A run folder's config.json holds `olft run`'s options (`strategies`, ...): this lets select,
    train and info read it. Exit-2 error for an unreadable file, a key given twice, or a key no
    subcommand has (with a did-you-mean).
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise OlftError(f"Config file not found: {p}. Pass --config a YAML or JSON file (e.g. a run folder's config.json).")
    try:
        # A .json file is held to JSON: YAML would accept what JSON refuses (a trailing comma,
        # single quotes), and a file another tool later reads as JSON must be valid JSON.
        data = _load_unique_json(p.read_text()) if p.suffix.lower() == ".json" else _load_unique(p.read_text())
    except OlftError as exc:
        raise OlftError(f"{p}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise OlftError(f"{p} is not valid JSON ({exc}); fix it, or name it .yaml to write it as YAML.") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise OlftError(f"{p} is not valid YAML or JSON ({str(exc).splitlines()[0]}).") from None
    if data is None:  # an empty file, or comments only
        raise OlftError(f"{p} is empty: write the options to set in it (model:, data:, method:, train:, selection:), or drop --config.")
    if not isinstance(data, dict):
        raise OlftError(f"{p} must hold a mapping of options (model:, data:, method:, train:, selection:), not {type(data).__name__}.")
    for group, value in data.items():  # `train: 5` is a known group written as a value, not an unknown option
        if group in SECTIONS and not isinstance(value, dict):
            # the example names an option of this group: `method: lora` means `method:` then `  method: lora`
            option, example = GROUP_EXAMPLES[group]
            example = value if option == group and isinstance(value, str) else example
            raise OlftError(f"{p}: {group} is a group of options, written as a mapping ({group}: then indented "
                            f"lines such as `  {option}: {example}`), not {value!r}.")
    for group, value in data.items():  # `trian: {lr: 1}`: a mistyped group, whatever options it holds
        if isinstance(value, dict) and group not in SECTIONS:
            if close := difflib.get_close_matches(group, SECTIONS, n=1, cutoff=0.6):
                raise OlftError(f"{p}: unknown group {group!r} for `olft {command}`. Did you mean the group {close[0]!r}?")
    known, elsewhere = _known_keys(command), set().union(*map(_known_keys, COMMANDS))
    keys = _flatten(data)
    for key in keys:
        if key not in elsewhere:
            # A key put in the wrong group ("lr:" at the top for "train.lr") matches by its own name;
            # difflib alone would miss it, as the group's prefix makes the strings far apart.
            same = sorted(k for k in elsewhere if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1] and k != key)
            # transformers' or PEFT's name for an option olft names otherwise ("learning_rate": "train.lr").
            other = OTHER_NAMES.get(key.rsplit(".", 1)[-1])
            close = [other] if other in elsewhere else same or difflib.get_close_matches(key, sorted(elsewhere), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else f" Known groups: {', '.join(COMMANDS[command][1])}."
            if close and other == close[0]:
                hint = f" Did you mean {other!r} (olft's name for what transformers or PEFT call {key.rsplit('.', 1)[-1]})?"
            raise OlftError(f"{p}: unknown option {key!r} for `olft {command}`.{hint}")
    skipped = [k for k in keys if k not in known]
    if not skipped:
        return CheckedConfig(keys, [], None, data)
    whole, data = data, copy.deepcopy(data)
    for key in skipped:  # a whole group another subcommand takes goes, or one key of a group this one takes
        section, _, name = key.rpartition(".")
        if section and section not in COMMANDS[command][1]:
            data.pop(section, None)
        elif section:
            del data[section][name]
        else:
            del data[key]
    return CheckedConfig([k for k in keys if k in known], skipped, yaml.safe_dump(data, sort_keys=False), whole)


def _skipped_note(command: str, path: str, skipped: list[str]) -> str:
    """The log line for the keys of config file `path` that `olft command` skips: named by group
    where the whole group goes (`olft info` skips data, train, ...), else by key."""
    sections = COMMANDS[command][1]
    names = dict.fromkeys(k.split(".")[0] if k.split(".")[0] not in sections else k for k in skipped)
    others = "/".join(c for c in COMMANDS if c != command and set(skipped) & _known_keys(c))
    what = "an option" if len(names) == 1 else "options"
    return f"{path}: skipping {', '.join(names)} ({what} of `olft {others}`, not of `olft {command}`)."


def _short_flags(argv: list[str]) -> list[str]:
    """`--model X` / `--method X` to `--model.model X` / `--method.method X` (jsonargparse
    reserves a group's own name for the whole group)."""
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        if name[2:] in SECTIONS and token.startswith("--") and argv[:1] != ["evaluate"]:
            token = f"{name}.{name[2:]}{eq}{value}"
        out.append(token)
    return out


def config_first(argv: list[str], sources: dict[str, str] | None = None, notes: list[str] | None = None,
                 dropped: list[DroppedRates] | None = None) -> list[str]:
    """Move `--config FILE` right after the subcommand, so that every flag overrides the file.
    A file with options only other subcommands take is handed on as its text without them, and
    `notes`, if given, gets a line naming them. `sources`, if given, is filled with {grouped key:
    file} for the options the files set and the command line does not (the last file wins, as in
    parsing), so a bad value can name its file. `dropped`, if given, gets the config file's
    per-strategy rates that a typed --strategy-lr drops (`DroppedRates`), worded once the command's
    strategies are known."""
    if len(argv) < 2 or argv[0] not in COMMANDS:
        return argv
    rest, configs, i = _short_flags(argv[1:]), [], 0
    files: list[tuple[str, CheckedConfig]] = []
    home = None  # the run folder whose config.json is the last file to set `out`
    while i < len(rest):
        if rest[i] == "--config" and i + 1 < len(rest):
            path = rest[i + 1]
            del rest[i : i + 2]
        elif rest[i].startswith("--config="):
            path = rest.pop(i).split("=", 1)[1]
        else:
            i += 1
            continue
        checked = check_config_file(argv[0], path)
        files.append((path, checked))
        if "out" in checked.keys:
            home = run_folder_of(path)
        configs += ["--config", path if checked.text is None else checked.text]  # jsonargparse reads a config's text as its file
    # A folder's config.json after an `olft train` add-on holds its --layers as the strategy
    # layers=3+5 (`train` has no --strategies): repeating or continuing that add-on from the file
    # alone takes them back (the last file's), so `olft train --config runs/X/config.json` does what it says.
    taken = None
    if argv[0] == "train" and not any(t == "--layers" or t.startswith("--layers=") for t in rest):
        taken = next(((p, spec) for p, checked in reversed(files) if (spec := _train_layers(checked.data)) is not None), None)
    for path, checked in files:
        skipped = checked.skipped
        if taken and taken[0] == path:  # its strategies are read, as --layers: no "skipping" them
            skipped = [k for k in skipped if k != "strategies"]
        if skipped and notes is not None:
            notes.append(_skipped_note(argv[0], path, skipped))
    if taken:
        rest += ["--layers", taken[1]]
        if notes is not None:
            # Said of a user's own file too: "as", not "an `olft train` wrote it".
            notes.append(f"{taken[0]}: --layers {taken[1]}, from its strategies layers={taken[1]} (as an `olft train` "
                         "records its --layers); pass --layers to tune other layers.")
    if home is not None and not any(t == "--out" or t.startswith("--out=") for t in rest):
        # config.json's `out` is the path as it was typed, relative to where the run started: from
        # any other directory it would name a new folder, so the run continues where the file lies.
        rest = ["--out", home, *rest]
    if dropped is not None:
        dropped += _dropped_rates(rest, files)
    if sources is not None:
        given = {t[2:].split("=", 1)[0] for t in rest if t.startswith("--")}
        for path, checked in files:
            sources.update({k: path for k in checked.keys if k not in given and k.split(".")[-1].replace("_", "-") not in given})
    return [argv[0], *configs, *rest]


class DroppedRates(NamedTuple):
    """A config file's `train.strategy_lr` that a typed --strategy-lr replaces whole, and what that drops."""

    typed: str  # the flag's value
    path: str  # the config file
    theirs: str  # the file's value, as --strategy-lr text
    dropped: dict[str, str]  # {strategy: its entry as the file wrote it ("final=0.001")}

    def warning(self, runs: set[str]) -> str | None:
        """The warning where a dropped rate is one of a strategy the command trains (`runs`: olft,
        final, full); None where none is (a rate of a strategy not run changes nothing)."""
        lost = {name: entry for name, entry in self.dropped.items() if name in runs}
        if not lost:
            return None
        one = len(lost) == 1
        return (f"--strategy-lr {self.typed} replaces {self.path}'s strategy_lr ({self.theirs}) whole, so {', '.join(lost)} "
                f"now train{'s' * one} at --lr; to keep {'it' if one else 'them'}, pass --strategy-lr "
                f"{self.typed},{','.join(lost.values())}.")


def _dropped_rates(rest: list[str], files: list[tuple[str, CheckedConfig]]) -> list[DroppedRates]:
    """Where a typed --strategy-lr replaces a config file's `train.strategy_lr` and so drops some of
    its entries: a flag overrides an option whole (`strategy_lr: {olft: 3e-3, final: 5e-3}` with
    `--strategy-lr olft=1e-2` trains final at --lr), which is the rule for every option but reads
    here like one entry changed. Merging instead would leave no way to drop an entry from the
    command line, so the rule stays and is said. An empty flag (`--strategy-lr ''`) clears the
    rates on purpose: nothing to say."""
    typed = None
    for i, token in enumerate(rest):
        name, eq, value = token.partition("=")
        if name in ("--strategy-lr", "--train.strategy_lr"):
            typed = value if eq else (rest[i + 1] if i + 1 < len(rest) else "")
    # the file whose value the flag replaces: the last to set it
    found = next(((p, c.data) for p, c in reversed(files) if "train.strategy_lr" in c.keys), None)
    if not (typed or "").strip() or found is None:
        return []
    path, data = found
    try:
        theirs = strategy_lr_text(data["train"]["strategy_lr"]) or ""
        parse_strategy_lr(typed), parse_strategy_lr(theirs)  # both readable, or refused where the value is read
    except OlftError:
        return []  # refused, with its own message, where the value is read
    # each dropped entry as the file wrote it (3e-3, not 0.003), for the flag that keeps it
    dropped = {n: e for n, e in strategy_lr_entries(theirs).items() if n not in strategy_lr_entries(typed)}
    return [DroppedRates(typed, path, theirs, dropped)] if dropped else []


def _train_layers(data: dict) -> str | None:
    """The layers of a config file's `strategies` (`data`, as parsed) when it is one `layers=...`
    entry (what an `olft train` records: `layers=3+5`), as --layers takes them; None otherwise (no
    such key, `olft,final,full`, several entries)."""
    entries = [e.strip() for e in str(data.get("strategies") or "").split(",") if e.strip()]
    found = re.fullmatch(r"layers\s*=\s*(\S.*)", entries[0], flags=re.I) if len(entries) == 1 else None
    return found[1] if found else None


def run_folder_of(path: str) -> str | None:
    """The run folder config file `path` belongs to (`path` is the config.json olft wrote in a
    folder with results.json), else None: a config.json copied out of its folder is a user's file."""
    from olft.ownership import saved_config

    p = Path(path)
    ours = p.name == "config.json" and (p.parent / "results.json").is_file() and saved_config(p.parent) is not None
    return str(p.parent) if ours else None


def from_file(msg: str, sources: dict[str, str]) -> str:
    """`msg` led by the config file that set the option it names, when no flag did ("--lr must be
    positive" becomes "run.yaml: train.lr: --lr must be positive"), as the file's other errors."""
    for key, path in sources.items():
        flag = "--" + key.split(".")[-1].replace("_", "-")
        if re.search(rf"(?<![\w.-]){re.escape(key)}(?![\w-])|{re.escape(flag)}(?![\w-])", msg):
            return f"{path}: {msg}" if msg.startswith(key) else f"{path}: {key}: {msg}"
    return msg
