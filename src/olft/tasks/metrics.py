"""GLUE metrics: accuracy, F1 (positive class 1), Matthews correlation, Pearson and Spearman,
computed with scikit-learn and SciPy, with the degenerate cases defined as 0.0."""

from __future__ import annotations

import math
import warnings
from typing import Any

from olft.errors import OlftError
from olft.tasks.registry import Task


def compute_metrics(task: Task, predictions: Any, labels: Any) -> dict[str, float]:
    """All of the task's GLUE metrics as plain floats, keyed as in `task.metrics`.

    Classification predictions may be class indices or (n, num_labels) logits. Undefined
    scores (constant predictions for Pearson/Spearman, no positives for F1) count as 0.0,
    so a degenerate model ranks last instead of crashing a run.
    """
    import numpy as np

    preds, golds = np.asarray(predictions), np.asarray(labels)
    if preds.ndim == 2 and (preds.shape[1] == 1 or not task.is_regression):
        preds = preds[:, 0] if task.is_regression else preds.argmax(axis=1)
    if preds.ndim != 1 or golds.ndim != 1 or len(preds) != len(golds) or len(golds) == 0:
        raise OlftError(f"Cannot score {task.display_name}: need equally long, non-empty 1-D "
                        f"predictions and labels, got shapes {preds.shape} and {golds.shape}.")
    preds, golds = _checked(task, preds, "predictions"), _checked(task, golds, "labels")
    if not task.is_regression:
        return _classification_metrics(task, preds, golds)
    from scipy.stats import pearsonr, spearmanr

    return {"pearson": _correlation(pearsonr, preds, golds),
            "spearman": _correlation(spearmanr, preds, golds)}


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
