"""olft: Optimal Layer Fine-Tuning.

Tune one well-chosen transformer layer with a parameter-efficient module and freeze the rest:
select the layer among the middle third by a short tuning run per candidate, tune the winner on
the full training set, and compare with final-layer and all-layer tuning.

    import olft
    cfg = olft.RunConfig(model=olft.ModelConfig("minilm-l6"), data=olft.DataConfig("rte"), out="runs/rte")
    results = olft.run(cfg)
    model = olft.load("runs/rte")      # a transformers model of the tuned layer (see olft.hfmodel)
"""

__version__ = "0.1.0"

_API = ("run", "select_layer", "info")
_HF = ("load", "load_tokenizer")
_CONFIG = ("DataConfig", "MethodConfig", "ModelConfig", "RunConfig", "SelectionConfig", "TrainConfig")


def __getattr__(name: str):
    # Nothing is imported with the package: the `olft` command (olft.__main__) catches SIGTERM
    # before it imports anything, and the entry points pull in torch and transformers.
    # Each name is imported on first use.
    if name in _CONFIG or name == "OlftError":
        import importlib

        return getattr(importlib.import_module("olft.config" if name in _CONFIG else "olft.errors"), name)
    if name in _HF:
        import importlib

        return getattr(importlib.import_module("olft.hfmodel"), name)
    if name in _API:
        import importlib

        _run = importlib.import_module("olft.api")

        return getattr(_run, name)
    if not name.startswith("_"):
        # A module of the package (olft.predict, olft.export, ...) on first use, as after `import olft.predict`.
        import importlib
        import importlib.util

        if importlib.util.find_spec(f"olft.{name}") is not None:
            return importlib.import_module(f"olft.{name}")
    raise AttributeError(f"module 'olft' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names are no module globals: list them as dir() would list imported ones.
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "DataConfig", "MethodConfig", "ModelConfig", "OlftError", "RunConfig", "SelectionConfig",
    "TrainConfig", "info", "load", "load_tokenizer", "run", "select_layer",
]
