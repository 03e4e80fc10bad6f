"""The `olft` command: subcommands map one-to-one onto library functions.

Options are generated from the config dataclasses (their field names, defaults and help), so
there is one place for every default. Input errors (`OlftError`) print one line and exit 2;
`--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path

from olft.config import SECTIONS, RunConfig
from olft.errors import OlftError

log = logging.getLogger("olft")

COMMANDS = {
    "info": ("Show a model's family, layers, middle bucket and PEFT parameter counts.", ("model", "method")),
    "run": ("Select a layer, tune it, and compare with final-layer and all-layer tuning.", tuple(SECTIONS)),
    "select": ("Only score the candidate layers and name the best one.", tuple(SECTIONS)),
    "train": ("Tune the PEFT module on explicit --layers (no selection).", tuple(SECTIONS)),
}


def _arg_type(tp):
    """Concrete type of a field annotation like `int | None` (annotations are strings here)."""
    if isinstance(tp, str):
        tp = eval(tp, {"float": float, "int": int, "str": str, "bool": bool})  # noqa: S307 - our own annotations
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _add_section(parser: argparse.ArgumentParser, name: str, cls) -> None:
    group = parser.add_argument_group(name)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = _arg_type(f.type)
        kwargs = {"dest": f"{name}.{f.name}", "default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (default: {f.default})"}
        if tp is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(flag, type=tp, choices=f.metadata.get("choices"), metavar=f.name.upper(), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="olft", description="Optimal Layer Fine-Tuning: tune one well-chosen layer with a PEFT module.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, (help_text, sections) in COMMANDS.items():
        p = sub.add_parser(command, help=help_text, description=help_text)
        _common(p)
        for name in sections:
            _add_section(p, name, SECTIONS[name])
        if command in ("run", "select", "train"):
            p.add_argument("--out", dest="run.out", default=argparse.SUPPRESS,
                           help="Run folder (default: runs/<model>-<task>-<method>). Rerunning with the same folder resumes.")
            p.add_argument("--overwrite", action="store_true", help="Discard what the run folder holds and start afresh.")
        if command == "run":
            p.add_argument("--strategies", dest="run.strategies", default=argparse.SUPPRESS,
                           help="Comma-separated: olft, final, full, layers=I+J (default: olft,final,full).")
        if command == "train":
            p.add_argument("--layers", required=True, help="Layer indices to tune, comma-separated (0-based), e.g. 11 or 3,5.")
    p = sub.add_parser("evaluate", help="Re-evaluate a finished run folder's saved weights.", description="Re-evaluate a run folder's saved weights on its validation split(s) and compare with results.json.")
    _common(p)
    p.add_argument("--run", required=True, help="Run folder written by `olft run`.")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="Only warnings and the final result; no progress bars.")
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    p.add_argument("--debug", action="store_true", help="Show tracebacks for input errors.")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values: dict[str, dict] = {name: {} for name in SECTIONS}
    top: dict = {}
    for key, value in vars(args).items():
        if "." not in key:
            continue
        section, name = key.split(".", 1)
        (top if section == "run" else values[section])[name] = value
    try:
        return RunConfig(**{k: SECTIONS[k](**v) for k, v in values.items()}, **top)
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
    cfg = config_from_args(args)
    if args.command == "info":
        _print(api.info(cfg))
    elif args.command == "select":
        res = api.select_layer(cfg, quiet=args.quiet, overwrite=args.overwrite)
        if show:
            print(f"selected layer: {res['selection']['selected_layer']}")
    else:
        if args.command == "train":
            cfg.strategies = "layers=" + "+".join(x.strip() for x in args.layers.split(","))
        res = api.run(cfg, quiet=args.quiet, overwrite=args.overwrite)
        from olft.report import table_md

        if show:
            print(table_md(res))
    distributed.shutdown()
    return 1 if args.command in ("run", "train") and res["status"] == "failed" else 0  # every requested strategy failed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    if not args.verbose and not _rank_zero():
        level = logging.WARNING  # one log per job under a launcher, from rank 0
    logging.basicConfig(level=level, format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s")
    for noisy in ("transformers", "httpx", "huggingface_hub", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR if not args.verbose else logging.INFO)
    _quiet_libraries(args.verbose)
    try:
        return dispatch(args)
    except OlftError as exc:
        if args.debug:
            raise
        print(f"olft: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("olft: interrupted; the run folder is kept and marked incomplete. Rerun the same command to continue.", file=sys.stderr)
        return 130


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
