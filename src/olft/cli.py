"""The `olft` command: subcommands map one-to-one onto library functions.

The parser is jsonargparse's, generated from the config dataclasses (field names, types from
their annotations, defaults, help), so there is one place for every default. Each option has
its grouped name (`--data.task`) and its short name (`--task`); `--config FILE` reads the same
groups from YAML or JSON (a run folder's `config.json` is one: a subcommand skips, in one log
line, the keys only other subcommands take), and flags override the file.
Input errors (`OlftError`, bad flags, unknown keys in a config file) print one line and exit 2;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import re
import sys
import typing
from pathlib import Path

from olft.cliconfig import COMMANDS, DroppedRates, config_first, from_file, run_folder_of
from olft.config import (
    KIND_WORDS,
    OTHER_NAMES,
    SECTIONS,
    SELECT_RATED,
    RunConfig,
    as_kind,
    choice_error,
    ignored_options,
    option_kind,
    strategy_name,
)
from olft.errors import OlftError, interrupted, stop_on_sigterm

log = logging.getLogger("olft")

TOP_LEVEL = ("strategies", "out")  # RunConfig's own fields (not in a section)
REQUIRED_EXAMPLES = {"--layers": " (e.g. --layers 3, 3,5 or 2-4)", "--run": " (a run folder, e.g. --run runs/minilm-l6-rte-adapter)"}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_options(parser, cls, prefix: str | None, skip: tuple[str, ...] = (), hidden: bool = False) -> None:
    """One option per dataclass field: `--<prefix>.<name>` and `--<name-with-dashes>` (left out
    of --help when `hidden`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        names = [f"--{prefix}.{f.name}", _flag(f.name)] if prefix else [_flag(f.name)]
        kwargs: dict = {"help": f.metadata["help"], "default": f.default}
        if f.name in SECTIONS:  # `--model` names the group in jsonargparse: `cliconfig._short_flags` maps it
            names = names[:1]
            kwargs["help"] += f" (also {_flag(f.name)})"
        if prefix is None:
            kwargs["dest"] = f.name
        choices = f.metadata.get("choices")
        if hints[f.name] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            convert = f.metadata.get("type")  # a converter of its own (named in --help), else the annotation's
            kwargs["type"] = (_Named(convert, f.metadata["type_name"]) if convert is not None
                              else _number(hints[f.name]) or hints[f.name])
            if choices:
                kwargs["choices"] = choices
                kwargs["metavar"] = _OneOf(choices).name  # None (unset) is the default, not a value to type
        if hidden:
            kwargs["help"] = argparse.SUPPRESS
        action = parser.add_argument(*names, **kwargs)
        if choices and hints[f.name] is not bool:
            action.type = _OneOf(choices, action.type)


def _number(hint) -> _Named | None:
    """The converter of a number option (annotation `hint`: int, float, or either or None) that reads
    a flag's or a config file's value as the config dataclasses do (`config.as_kind`): `1e3` and
    `10.0` as whole numbers, nan and inf as floats for the dataclass's range check to name. argparse
    reports a value it cannot read as "invalid int value" (`_parse_error` words it). None for any
    other annotation."""
    kind, optional = option_kind(hint)
    if kind not in (int, float):
        return None

    def convert(value):
        if optional and value in (None, "null", "None"):
            return None
        out = as_kind(kind, value)
        if out is None:  # a config file's is worded from this (a flag's, argparse words: `_parse_error`)
            raise ValueError(f"expects {KIND_WORDS[kind]}, got {value}")
        return out

    return _Named(convert, f"{kind.__name__}{' | None' * optional}")


class _Named:
    """A value converter that --help prints as `name` (jsonargparse prints a function's repr)."""

    def __init__(self, convert, name: str) -> None:
        self.convert, self.name = convert, name

    def __call__(self, value):
        return self.convert(value) if self.convert is not None else value

    def __repr__(self) -> str:
        return self.name


class _OneOf(_Named):
    """The value converter of an option with choices, named by them in --help.

    jsonargparse converts such a value with an anonymous function, which --help would print as
    its type; this wraps that function and prints as `{adapter,lora,prefix}`. Argparse still
    checks the choices, so a bad value gets argparse's message naming it and the allowed ones.
    """

    def __init__(self, choices: tuple, convert=None) -> None:
        super().__init__(convert, "{" + ",".join(str(c) for c in choices if c is not None) + "}")



def _subparser(help_text: str, usage: str | None = None):
    from jsonargparse import ArgumentParser

    # allow_abbrev=False: argparse would take `--method.r 8` as --method.reduction_factor and
    # `--max-train 7` as --max-train-samples; an unknown flag gets olft's "did you mean" instead.
    p = ArgumentParser(description=help_text, exit_on_error=False, usage=usage, allow_abbrev=False)
    p.add_argument("-q", "--quiet", action="store_true", help="Only warnings and the final result; no progress bars.")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    p.add_argument("--debug", action="store_true", help="Show tracebacks for input errors.")
    return p


def build_parser():
    """The whole command line (jsonargparse, with one subcommand per library entry point)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="olft", exit_on_error=False, allow_abbrev=False,
                            description="Optimal Layer Fine-Tuning: tune one well-chosen layer with a PEFT module.")
    sub = parser.add_subcommands(dest="command", required=True)
    for command, (help_text, sections) in COMMANDS.items():
        # argparse's generated usage lists ~50 options in their dotted forms; a short one reads better.
        usage = (f"olft {command} [--config FILE] [--model MODEL] " + ("[--task TASK] [--method {adapter,lora,prefix}] "
                 if command != "info" else "") + ("--layers L " if command == "train" else "") + "[options]\n"
                 "  every option has a short form ({}) and a dotted form ({}), as listed below".format(
                     *(("--dtype", "--model.dtype") if command == "info" else ("--lr", "--train.lr"))))
        p = _subparser(help_text, usage)
        p.add_argument("--config", action=ActionConfigFile,
                       help="YAML or JSON file with the options below, grouped as model/data/method/train/selection "
                            "(a run folder's config.json works); flags given with it override the file.")
        for name in sections:
            # train selects no layer: it takes the selection options (a shared command line or a run
            # folder's config.json has them) but lists none, and warns of any set (`ignored_options`).
            _field_options(p, SECTIONS[name], name, hidden=command == "train" and name == "selection")
        if command != "info":
            _field_options(p, RunConfig, None, skip=() if command == "run" else ("strategies",))
            p.add_argument("--overwrite", action="store_true", help="Discard what the run folder holds and start afresh.")
        if command == "train":
            p.add_argument("--layers", required=True, help="Layers to tune (0-based): numbers or ranges low-high, comma-separated, e.g. 11, 3,5 or 2-4 (3+5, as --strategies layers=3+5 and table.md write it, works too).")
        sub.add_subcommand(command, p, help=help_text)
    p = _subparser("Re-evaluate a run folder's saved weights on its validation split(s) and compare with results.json.")
    p.add_argument("--run", required=True, help="Run folder written by `olft run` or `olft train`.")
    sub.add_subcommand("evaluate", p, help="Re-evaluate a run folder's saved weights (and say what is not finished).")
    from olft.export import add_export_options
    from olft.predict import add_predict_options

    p = _subparser("Classify new text with a run's tuned model: a file, a text, or a GLUE split (test: submission files).")
    add_predict_options(p)
    sub.add_subcommand("predict", p, help="Classify new text with a run's tuned model; GLUE test submission files.")
    p = _subparser("Export a run's tuned model in a standard format (peft adapter, or merged transformers weights).")
    add_export_options(p)
    sub.add_subcommand("export", p, help="Export a run's tuned model (peft adapter folder, or merged weights).")
    return parser


class _Missing(OlftError):
    """A command line that lacks a required option (`olft train` without --layers): `flags`."""

    def __init__(self, msg: str, flags: list[str] = ()) -> None:
        super().__init__(msg)
        self.flags = flags


# A value that stands in for a missing required option while --print_config checks the others.
STAND_INS = {"--layers": "0", "--run": "."}


def _parse_error(parser, argv: list[str], exc: Exception) -> OlftError:
    """One line for a bad command line, with the nearest option for an unknown flag."""
    # jsonargparse puts the key on the first line and what is wrong with its value on the next ones;
    # an optional value (`int | None`) lists every type tried over eight lines: it reads as the plain type's.
    text = re.sub(r"Parser key \"([\w.]+)\":\s+Does not validate against any of the Union subtypes\s+"
                  r"Subtypes: \[<class '(\w+)'>, <class 'NoneType'>\].*\n\s*Given value: (.*)", r"\1 expects a \2, got \3",
                  str(exc), flags=re.S)
    msg = " ".join(line.strip() for line in text.splitlines()[:3]) if text else repr(exc)
    msg = re.sub(r"Parser key \"([\w.]+)\": Expected a <class '(\w+)'>\. Got value: (.*)", r"\1 expects a \2, got \3", msg)
    # a number option's converter (`_number`) refusing a value: argparse says "invalid int value"
    msg = re.sub(r"argument --([\w.]+)(?:/--[\w-]+)?: invalid (int|float)(?: \| None)? value: '([^']*)'",
                 lambda m: f"{m[1] if '.' in m[1] else '--' + m[1]} expects a {m[2]}, got {m[3]}", msg)
    msg = re.sub(r"Parser key \"([\w.]+)\": expects a", r"\1 expects a", msg)
    msg = msg.replace("expects a float", "expects a number").replace("expects a int", "expects a whole number")
    # a value outside an option's choices, from a config file (jsonargparse) or a flag (argparse): said
    # as the config dataclasses say it (`config.choice_error`), with the closest choice
    bad = (re.search(r"Parser key \"([\w.]+)\": '([^']*)' not among choices \(([^)]*)\)", msg)
           or re.search(r"argument --([\w.]+)(?:/--[\w-]+)?: invalid choice: '([^']*)' \(choose from ([^)]*)\)", msg))
    if bad:
        choices = re.findall(r"'([^']*)'", bad.group(3))
        key = bad.group(1) if "." in bad.group(1) else f"--{bad.group(1)}"  # a command's own flag (export --format)
        msg = msg[: bad.start()] + choice_error(key, bad.group(2), choices).rstrip(".") + msg[bad.end():]
    command = next((a for a in argv if not a.startswith("-")), None)
    if missing := re.search(r"the following arguments are required: (.*)", msg):
        # jsonargparse names them by their keys ("train.layers"): the user types flags.
        flags = [_flag(name.strip().split(".")[-1]) for name in missing.group(1).split(",")]
        example = REQUIRED_EXAMPLES.get(flags[0], "") if len(flags) == 1 else ""
        return _Missing(f"olft {command} needs {' and '.join(flags)}{example}. See `olft {command} --help`.", flags)
    if "unrecognized arguments" in msg and command in parser._subcommands_action._name_parser_map:
        sub = parser._subcommands_action._name_parser_map[command]
        flags = [s for a in sub._actions for s in a.option_strings]
        for token in msg.split(":", 1)[1].split():
            if token.startswith("-"):
                # transformers' --learning-rate, or dotted as olft's own are: --train.learning_rate
                name = token.split("=")[0].lstrip("-")
                theirs = name.rsplit(".", 1)[-1].replace("-", "_")  # as transformers and PEFT spell it
                other = OTHER_NAMES.get(theirs)
                # --method and --model are registered as --method.method and --model.model only
                # (cliconfig._short_flags rewrites the short ones): either form means olft has it.
                if other is not None and {_flag(other.split(".")[-1]), "--" + other} & set(flags):
                    answer = "--" + other if "." in name and "--" + other in flags else _flag(other.split(".")[-1])
                    return OlftError(f"unknown option {token} for `olft {command}`. Did you mean {answer} "
                                     f"(olft's name for what transformers or PEFT call {theirs})?")
                typed = token.split("=")[0]
                owners = [f"`olft {c}`" for c, p in parser._subcommands_action._name_parser_map.items()
                          if c != command and typed in {s for a in p._actions for s in a.option_strings}]
                if owners:
                    # another command's option (olft select --strategies): said, with one of this command's only if
                    # very near (predict's --strategy, not select's --strategy-lr)
                    near = difflib.get_close_matches(typed, flags, n=2, cutoff=0.8)
                    return OlftError(f"unknown option {typed} for `olft {command}`: it is an option of "
                                     f"{', '.join(dict.fromkeys(owners))}" + (f"; did you mean {' or '.join(near)}?" if near else
                                                                            f". See `olft {command} --help`."))
                close = difflib.get_close_matches(typed, flags, n=1)
                if close:
                    return OlftError(f"unknown option {token} for `olft {command}`. Did you mean {close[0]}?")
    end = "" if msg.endswith("?") else "."  # a "Did you mean ...?" ends its own sentence
    return OlftError(f"{msg}{end} See `olft {command or ''} --help`.".replace("  ", " "))


def _as_typed(msg: str, argv: list[str]) -> str:
    """`msg` (an error that opens with an option's config key, "train.lr must be ...", as the config
    dataclasses and `_parse_error` name options) with that key named as the flag that set it, as
    typed ("--lr" or "--train.lr"): the user reads the name they wrote. Left as it is where no flag
    set the option: a config file's (`cliconfig.from_file` then names the file) or a default's."""
    m = re.match(r"(\w+)\.(\w+)(?![\w.])|(strategies|out)\b", msg)  # a section's option, or RunConfig's own
    if m is None or (m.group(3) is None and m.group(1) not in SECTIONS):
        return msg
    section, name = m.groups()[:2] if m.group(3) is None else (None, m.group(3))
    spellings = {_flag(name)} | ({f"--{section}.{name}"} if section else set()) | ({f"--{section}"} if name == section else set())
    typed = [t.split("=", 1)[0] for t in argv if t.startswith("--")]
    flag = next((t for t in reversed(typed) if t in spellings), None)  # the last one given is the one used
    return msg if flag is None else flag + msg[m.end():]


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse the command line into a flat namespace: command, its options, and `cfg` (a RunConfig)."""
    printing = [a for a in argv if a.split("=", 1)[0] == "--print_config"]
    if printing:  # jsonargparse prints and exits as it parses: check the values first, as a run would
        rest = [a for a in argv if a not in printing]
        try:
            parse(rest)
        except _Missing as missing:
            # A template printed without --layers is what --print_config is for; the values given
            # are still checked, with a stand-in for what is missing (`--lr -1` is refused).
            stand_ins = [x for f in missing.flags if f in STAND_INS for x in (f, STAND_INS[f])]
            try:
                parse(rest + stand_ins)
            except _Missing:
                pass
    parser = build_parser()
    sources: dict[str, str] = {}
    notes: list[str] = []
    replaced: list[DroppedRates] = []
    typed, argv = list(argv), config_first(list(argv), sources, notes, replaced)
    try:
        try:
            ns = parser.parse_args(argv)
        except argparse.ArgumentError as exc:
            raise _parse_error(parser, argv, exc) from None
        values = ns[ns.command].as_dict()
        args = argparse.Namespace(command=ns.command, **{k: v for k, v in values.items() if k not in SECTIONS})
        if ns.command in COMMANDS:
            args.cfg = config_from_values(values)
    except OlftError as exc:
        again = type(exc)(from_file(_as_typed(str(exc), typed), sources))
        again.__dict__.update(vars(exc))  # what the error carries (_Missing's flags)
        raise again from exc.__cause__
    args.notes = notes  # logged once logging is set up
    given = _given(values, argv, sources) if ns.command in ("run", "select", "train") else set()
    # The API names the options a run or selection leaves unused (`api.run`'s `given`): the CLI
    # passes it what was typed, as it alone knows. `olft train` is a run of strategies layers=...
    # to the API, which would blame --strategies for its selection options: the CLI words those
    # warnings itself and the API is given only --strategy-lr (which no warning names: the API
    # refuses it typed, as it would do nothing), so nothing is named twice.
    train = ns.command == "train"

    def named(keys: set[str]) -> dict[str, str | None]:
        """`keys` with how a warning names each: a config file's option by file and key, a flag's as the flag."""
        return {k: f"{sources[k]}: {k}" if k in sources else None for k in keys}

    args.warnings = ignored_options(args.cfg, named(given), "train") if train and given else []
    args.warnings += _repeated(parser._subcommands_action._name_parser_map[ns.command], argv)
    runs = _rated_strategies(ns.command, args.cfg) if ns.command in COMMANDS else set()
    args.warnings += [w for d in replaced if (w := d.warning(runs)) is not None]
    if "train.strategy_lr" in sources and "train.strategy_lr" in given and not set(args.cfg.train.lr_by_strategy()) & runs:
        # A shared config file's rates, none for a strategy this command trains: unused, as the
        # file's other options another command reads; said, but no reason to refuse the command.
        args.warnings.append(f"{sources['train.strategy_lr']}: its strategy_lr ({args.cfg.train.strategy_lr}) is not used: "
                             f"{_rated_words(ns.command)}.")
        given.discard("train.strategy_lr")
    elif "train.strategy_lr" in sources and "train.strategy_lr" in given and ns.command != "train":
        # Some of a config file's rates are for strategies this command does not run: said here,
        # naming the file (the API's warning, which knows no file, is then not given the option).
        if unused := sorted(set(args.cfg.train.lr_by_strategy()) - runs):
            args.warnings.append(f"{sources['train.strategy_lr']}: its strategy_lr rate of {', '.join(unused)} is not used: "
                                 f"{_unrun_words(ns.command, args.cfg)} does not run {'them' if len(unused) > 1 else 'it'}.")
            given.discard("train.strategy_lr")
    args.given = named(given & {"train.strategy_lr"} if train else given)
    return args


def _rated_strategies(command: str, cfg) -> set[str]:
    """The strategies with rates of their own (olft, final, full: --strategy-lr's names) that
    `command` trains: `olft train` none (its --layers train at --lr), `olft select` olft (its
    candidates train at olft's rate), `olft run` those of its --strategies; `olft info` none."""
    if command == "select":
        return {"olft"}
    if command != "run":
        return set()
    return {strategy_name(e) for e in cfg.strategies.split(",") if e.strip()} & {"olft", "final", "full"}


def _unrun_words(command: str, cfg) -> str:
    """What does not run the strategies whose config-file rates are unused, as the API's warning names it."""
    return SELECT_RATED if command == "select" else f"--strategies {cfg.strategies}"


def _rated_words(command: str) -> str:
    """Why a command uses none of a config file's per-strategy rates (`_rated_strategies`)."""
    return {"train": "olft train's --layers train at --lr", "select": f"{SELECT_RATED}, and the file sets none for olft"
            }.get(command, "the file sets no rate for a strategy this run trains")


def _repeated(sub, argv: list[str]) -> list[str]:
    """A warning per option set twice on the command line to different values, in one spelling
    or two (`--lr 1e-3 --train.lr 2e-3`, `--bf16 --no-bf16`): argparse keeps the last without a
    word, which a long command line assembled from a script's pieces can hide. A warning, not a
    refusal: overriding an earlier flag is how such scripts are meant to be used."""
    actions = {s: a for a in sub._actions for s in a.option_strings}
    seen: dict[str, list[tuple[str, str]]] = {}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        action = actions.get(name) if name.startswith("--") and name != "--config" else None
        if action is not None:
            if not eq and action.nargs != 0 and i + 1 < len(argv):
                value, i = argv[i + 1], i + 1
            elif action.nargs == 0:
                value = name  # --bf16 / --no-bf16: the flag is its value
            if name[2:] in (f"{g}.{g}" for g in SECTIONS):  # as typed: `_short_flags` made --model --model.model
                name = name.split(".")[0]
            seen.setdefault(action.dest, []).append((name, value))
        i += 1
    lines = []
    for uses in seen.values():
        if len({v for _, v in uses}) > 1:
            typed = ", ".join(f"{n} {v}" if n != v else n for n, v in uses)
            last = uses[-1][0] if uses[-1][0] == uses[-1][1] else f"{uses[-1][0]} {uses[-1][1]}"
            lines.append(f"{typed}: one option set {len(uses)} times; the last, {last}, is used.")
    return lines


def _given(values: dict, argv: list[str], sources: dict[str, str]) -> set[str]:
    """The grouped options ("selection.selector") the user set: given as a flag, or set by a config
    file of the user's to other than the default. A run folder's config.json (`sources` names the
    file behind each option no flag set) is not counted: it records every option of the run, its
    selection group too after an add-on `olft train`, so repeating or continuing from it would warn
    of options nobody typed this time."""
    flags = {t[2:].split("=", 1)[0] for t in argv if t.startswith("--")}
    ours = {path for path in set(sources.values()) if run_folder_of(path) is not None}
    return {f"{section}.{f.name}" for section in SECTIONS if isinstance(values.get(section), dict)
            for f in dataclasses.fields(SECTIONS[section])
            if {f"{section}.{f.name}", f.name.replace("_", "-")} & flags
            or (values[section].get(f.name, f.default) != f.default and sources.get(f"{section}.{f.name}") not in ours)}


def config_from_values(values: dict) -> RunConfig:
    """A RunConfig from parsed values grouped as the config dataclasses."""
    kwargs = {k: v for k, v in values.items() if k in TOP_LEVEL}
    try:
        sections = {name: SECTIONS[name](**values[name]) for name in SECTIONS if name in values}
        return RunConfig(**sections, **kwargs)
    except TypeError as exc:
        raise OlftError(f"Invalid options: {exc}") from exc


def _print(obj) -> None:
    print(json.dumps(obj, indent=2))


def dispatch(args: argparse.Namespace) -> int:
    from olft import api, distributed

    show = distributed.is_main_process()  # under a launcher only rank 0 prints
    if args.command == "evaluate":
        from olft.evaluate import evaluate_run

        report = evaluate_run(Path(args.run), quiet=args.quiet)
        if show:
            print(report)
        return 0
    if args.command == "predict":
        from olft.predict import predict_command

        return predict_command(args)
    if args.command == "export":
        from olft.export import export_command

        return export_command(args)
    cfg = args.cfg
    if args.command == "info":
        _print(api.info(cfg))
    elif args.command == "select":
        res = api.select_layer(cfg, quiet=args.quiet, overwrite=args.overwrite, given=args.given)
        if show:
            print(f"selected layer: {res['selection']['selected_layer']}")
    else:
        if args.command == "train":
            from olft.layerspec import check_range, parse_layers

            layers = parse_layers(str(args.layers), "--layers")  # its form first: no model needed to refuse "2,x"
            # Its range from the model's config, before anything loads, quoting --layers as typed (`run` checks
            # the strategy layers=... again once the model has loaded, for a config that declares no layer count).
            if (n := api.config_layers(cfg)) is not None:
                check_range(layers, n, f"--layers {args.layers}")
            cfg.strategies = "layers=" + "+".join(map(str, layers))
        res = api.run(cfg, quiet=args.quiet, overwrite=args.overwrite, given=args.given)
        from olft.report import table_md

        if show:  # the folder's own path in the commands it quotes, as its table.md has it
            print(table_md(res, Path(cfg.out) if cfg.out else api.default_out(cfg)))
    distributed.shutdown()
    # "failed" or "finished with failures": a strategy failed (`api._end` logs which), so `olft run && next` stops
    return 1 if args.command in ("run", "train") and res["status"] != "complete" else 0


def main(argv: list[str] | None = None) -> int:
    """The `olft` command: its exit code (0, 1 a strategy of `olft run` or `olft train` failed, 2 bad input,
    130 Ctrl-C, 143 SIGTERM, 141 its output pipe closed).

    SIGTERM is caught from the first line, before the parser pulls in jsonargparse and a
    subcommand torch and transformers (seconds), so a kill at any moment stops the command as
    Ctrl-C does: one line, exit 143, and the `finally` clauses of whatever was being written
    run. The `olft` command enters by `olft.__main__.main`, which catches it before this module
    imports: only Python's own start (nothing written) comes before that.
    """
    with stop_on_sigterm():
        try:
            return _main(sys.argv[1:] if argv is None else list(argv))
        except (KeyboardInterrupt, BrokenPipeError) as exc:
            # A run stopped with its folder open has said where it stands and how to continue (api's
            # log line, once); stopped before that (imports, loading), or in predict/export, nothing was written.
            # A closed output pipe (`olft ... | head`, a `| tee` killed first) stops it as a signal would.
            return interrupted(exc)


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        args = parse(argv)
    except OlftError as exc:
        if debug:
            raise
        print(f"olft: error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(args.verbose, args.quiet)
    for note in args.notes:
        log.info(note)
    for line in args.warnings:  # before anything loads: an option `olft train` will not use (run and select: the API's)
        log.warning(line)
    try:
        return dispatch(args)
    except OlftError as exc:
        if args.debug:
            raise
        print(f"olft: error: {exc}", file=sys.stderr)
        return 2


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    if not verbose and not _rank_zero():
        # One log per job under a launcher, from rank 0: every rank makes the same decisions (options,
        # selection), so their warnings would repeat once per process. A rank's own failure raises.
        level = logging.ERROR
    logging.basicConfig(level=level, format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s")
    import huggingface_hub.utils.logging  # noqa: F401 - its import sets its own level: import first, then set ours
    for noisy in ("transformers", "httpx", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not verbose else logging.INFO)
    _quiet_libraries(verbose)


def _rank_zero() -> bool:
    from olft.distributed import is_main_process

    return is_main_process()


def _quiet_libraries(verbose: bool) -> None:
    import os
    import warnings

    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        except ImportError:
            pass


if __name__ == "__main__":
    sys.exit(main())
