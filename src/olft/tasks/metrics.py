"""GLUE metrics: accuracy, F1 (positive class 1), Matthews correlation, Pearson and Spearman,
computed with scikit-learn and SciPy.

Two views of the same numbers. `compute_metrics`, which training and selection rank by, counts
a score that is undefined on the rows given (a correlation of constant values, F1 with no
positive row) as 0.0, so a degenerate model ranks last instead of crashing a run. `score`, for
what `olft predict` and `olft evaluate` show a person, names such a score undefined and says
why, rather than printing a number that means nothing:

- Pearson, Spearman and MCC (a correlation of the class indicators) are undefined on fewer than
  3 labelled rows (on 2 they are +-1 whenever defined), when every label is the same, when the
  model predicts the same value for every row, or when a value is not a finite number.
- F1 of the positive class is undefined (0/0) when no row is positive, by its label or by the
  prediction; with a positive label and none predicted it is a true 0.0.
- Accuracy is always defined.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from olft.errors import OlftError
from olft.tasks.registry import Task

CORRELATIONS = ("pearson", "spearman", "mcc")
FEWEST_ROWS = 3  # for a correlation: on 2 rows it is +-1 whenever it is defined


def compute_metrics(task: Task, predictions: Any, labels: Any) -> dict[str, float]:
    """All of the task's GLUE metrics as plain floats, keyed as in `task.metrics`.

    Classification predictions may be class indices or (n, num_labels) logits. Undefined
    scores (constant predictions for Pearson/Spearman, no positives for F1) count as 0.0,
    so a degenerate model ranks last instead of crashing a run.
    """
    return _values(task, *_prepared(task, predictions, labels))


def _values(task: Task, preds: Any, golds: Any) -> dict[str, float]:
    """`compute_metrics` on arrays `_prepared` already checked."""
    if not task.is_regression:
        return _classification_metrics(task, preds, golds)
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": _correlation(pearsonr, preds, golds),
            "spearman": _correlation(spearmanr, preds, golds)}


@dataclass
class Scores:
    """The task's metrics on some labelled rows, as shown to a person.

    `values` is `compute_metrics`' dict (a number even where undefined: 0.0, or +-1 on 2 rows);
    `undefined` maps each metric that has no value on these rows to why ("undefined on 2
    labelled rows (...)").
    """

    values: dict[str, float]
    undefined: dict[str, str] = field(default_factory=dict)

    def text(self, recorded: dict[str, float] | None = None) -> str:
        """One line: `name=value` for each defined metric (with results.json's value beside it
        where `recorded` is given), then each undefined metric with why, metrics that share a
        reason named together: "pearson, spearman: undefined on 2 labelled rows (...)"."""
        parts = [f"{name}={value:.4f}" + (f" (results.json: {recorded[name]:.4f})" if recorded and name in recorded else "")
                 for name, value in self.values.items() if name not in self.undefined]  # fmt: skip
        line = " ".join(parts)
        for reason in dict.fromkeys(self.undefined.values()):
            names = [name for name in self.values if self.undefined.get(name) == reason]
            saved = [f"{recorded[name]:.4f}" for name in names if recorded and name in recorded]
            note = f" (results.json: {', '.join(saved)}, the number training and selection rank by)" if saved else ""
            line += f"{'; ' if line else ''}{', '.join(names)}: {reason}{note}"
        return line


def score(task: Task, predictions: Any, labels: Any) -> Scores:
    """`compute_metrics` and which of those metrics are undefined on these rows, and why (see
    the module docstring), for `olft predict` and `olft evaluate` to show."""
    preds, golds = _prepared(task, predictions, labels)
    return Scores(_values(task, preds, golds), _undefined(task, preds, golds))


def _prepared(task: Task, predictions: Any, labels: Any) -> tuple[Any, Any]:
    """(predictions, labels) as 1-D arrays: scores as floats, or class indices (logits argmaxed)."""
    import numpy as np

    preds, golds = np.asarray(predictions), np.asarray(labels)
    if preds.ndim == 2 and (preds.shape[1] == 1 or not task.is_regression):
        preds = preds[:, 0] if task.is_regression else preds.argmax(axis=1)
    if preds.ndim != 1 or golds.ndim != 1 or len(preds) != len(golds) or len(golds) == 0:
        raise OlftError(f"Cannot score {task.display_name}: need equally long, non-empty 1-D "
                        f"predictions and labels, got shapes {preds.shape} and {golds.shape}.")
    return _checked(task, preds, "predictions"), _checked(task, golds, "labels")


def _checked(task: Task, values: Any, what: str) -> Any:
    """Values as floats (regression) or as int class indices of this task, else an error."""
    import numpy as np

    try:
        numbers = values.astype(np.float64)
    except (TypeError, ValueError):
        numbers = None
    if task.is_regression and numbers is not None:
        return numbers
    if numbers is None or not np.all(np.isin(numbers, np.arange(task.num_labels))):
        kind = "numbers" if task.is_regression else f"class indices 0..{task.num_labels - 1}"
        raise OlftError(f"Cannot score {task.display_name}: {what} must be {kind}.")
    return numbers.astype(np.int64)


def _undefined(task: Task, preds: Any, golds: Any) -> dict[str, str]:
    """{metric: why it is undefined} for the task's metrics that have no value on these rows."""
    import numpy as np

    found = {}
    correlation = _correlation_gap(task, preds, golds)
    if correlation is not None:
        found.update({name: correlation for name in task.metrics if name in CORRELATIONS})
    if "f1" in task.metrics and not np.any(golds == 1) and not np.any(preds == 1):
        positive = task.labels[1]
        found["f1"] = (f"undefined: no labelled row is {positive!r}, by its label or by the model's prediction "
                       f"(F1 of the positive class {positive!r} is 0/0)")
    return found


def _correlation_gap(task: Task, preds: Any, golds: Any) -> str | None:
    """Why a correlation of predictions with labels is undefined on these rows; None if it is not."""
    import numpy as np

    n = len(golds)
    rows = f"{n} labelled row{'s' if n != 1 else ''}"
    what = "scores" if task.is_regression else "classes"
    if n < FEWEST_ROWS:
        return f"undefined on {rows} (a correlation needs at least {FEWEST_ROWS} with different {what})"
    for side, values in (("label", golds), ("model's prediction", preds)):
        bad = int(np.sum(~np.isfinite(values)))
        if bad:
            one = bad == 1
            return (f"undefined: the {side}{'' if one else 's'} of {bad} of the {rows} {'is' if one else 'are'} "
                    f"not {'a finite number' if one else 'finite numbers'} (NaN or infinite)")
    shown = (lambda v: f"{v:.4g}") if task.is_regression else (lambda v: repr(task.labels[int(v)]))
    if np.ptp(golds) == 0:
        return f"undefined: all {rows} have the label {shown(golds[0])} (a correlation needs different {what})"
    if np.ptp(preds) == 0:
        return f"undefined: the model predicts {shown(preds[0])} for all {rows} (a correlation needs different {what})"
    return None


def _classification_metrics(task: Task, preds: Any, golds: Any) -> dict[str, float]:
    """Accuracy, plus F1 (positive class 1) and Matthews correlation where the task uses them."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    with warnings.catch_warnings():  # single-class inputs warn; the 0.0 they yield is intended
        warnings.simplefilter("ignore")
        found = {"accuracy": float(accuracy_score(golds, preds))}
        if "f1" in task.metrics:
            found["f1"] = float(f1_score(golds, preds, pos_label=1, average="binary",
                                         zero_division=0))
        if "mcc" in task.metrics:
            found["mcc"] = float(matthews_corrcoef(golds, preds))
    return {name: found[name] for name in task.metrics}


def _correlation(fn: Any, a: Any, b: Any) -> float:
    """A correlation statistic, 0.0 where it is undefined (constant or non-finite input)."""
    import numpy as np

    finite = bool(np.all(np.isfinite(a)) and np.all(np.isfinite(b)))
    if len(a) < 2 or not finite or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(fn(a, b).statistic)
    return value if math.isfinite(value) else 0.0


def headline(task: Task, metrics: dict[str, float]) -> float:
    """The task's headline score (the paper's metric) from a `compute_metrics` result."""
    if task.metric not in metrics:
        raise OlftError(f"No {task.metric!r} score for {task.display_name} among: "
                        f"{', '.join(metrics) or 'none'}.")
    return float(metrics[task.metric])
