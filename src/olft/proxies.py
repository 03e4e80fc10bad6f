"""Layer-selection proxies that need no training run of each candidate.

- `probe`: one frozen forward over the selection data gives every candidate layer's output;
  a linear model per layer (logistic regression, or ridge for regression tasks) is fitted on
  the fit part and scored on the held-out part. A layer whose output already separates the
  task linearly is one a small module there can steer. Cost: one forward of the model over the
  selection examples plus a few small convex fits. Its losses are compared with a constant
  predictor's on the same examples (`stronger_constant` of `constant_losses` and, on
  classification, `uniform_losses`): a probe that does no better found no signal, and the
  selection record says so (`olft.select.Selection.no_signal`).
- `gradient`: the relative gradient norm (Auto-RGN, Lee et al. 2023, "Surgical fine-tuning")
  of each candidate's PEFT module at initialisation, with the module placed on every candidate
  at once and the head at its seeded initialisation: ||grad|| / ||weights|| over the module's
  tensors, summed over a few training batches. With a zero-initialised up-projection (adapter)
  or LoRA B, only those tensors receive gradient at initialisation; the norm over all of a
  layer's module tensors is still defined and comparable between layers of the same width.

Both are deterministic for a given seed and data and run no optimizer step.
"""

from __future__ import annotations

import numpy as np
import torch

from olft.backbone import Stack
from olft.config import MethodConfig
from olft.data import Encoded, collate, eval_order, train_order
from olft.errors import OlftError

# Inverse L2 strength of the probes: hundreds of examples against hundreds of features overfit at
# C=1 (held-out log loss ~1.0 on SST-2 with minilm-l6 at 75 % accuracy); 0.05 keeps them calibrated.
PROBE_C = 0.05
# Floor of a probability before its log: a class the probe (or the constant baseline) never
# predicts costs -log(1e-12) ~ 27.6 per example instead of infinity.
PROBE_EPS = 1e-12


@torch.inference_mode()
def layer_features(stack: Stack, enc: Encoded, layers: list[int], batch_size: int) -> dict[int, np.ndarray]:
    """Layer -> (n_examples, hidden) float64 mean over real tokens of that layer's output."""
    top = max(layers) + 1
    out = {layer: np.zeros((len(enc), stack.hidden_size)) for layer in layers}
    device = stack.head.weight.device
    stack.eval()
    for idx in eval_order(enc.lengths, batch_size):
        batch = collate(enc, idx, stack.num_labels == 1)
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        inputs = stack.prepare(ids, mask)
        hidden, weights = inputs.hidden, mask.unsqueeze(-1).float()
        for layer in range(top):
            hidden = stack.run_layers(hidden, inputs, layer, layer + 1)
            if layer in out:
                pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)
                out[layer][batch.indices.numpy()] = pooled.cpu().double().numpy()
    return out


def probe_scores(
    features_fit: np.ndarray, labels_fit: list, features_score: np.ndarray, labels_score: list, regression: bool
) -> tuple[float, dict, list[float]]:
    """(score, metrics, per-example held-out losses) of a linear probe; score = -held-out loss.

    Logistic regression (C=PROBE_C, standardised features) with cross-entropy per example, or ridge
    regression (alpha=1/PROBE_C) with squared error per example for regression tasks.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_fit, y_score = np.asarray(labels_fit), np.asarray(labels_score)
    if regression:
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0 / PROBE_C)).fit(features_fit, y_fit)
        losses = (model.predict(features_score) - y_score) ** 2
        return -float(losses.mean()), {"loss": float(losses.mean())}, losses.tolist()
    if len(set(y_fit.tolist())) < 2:
        raise OlftError("The probe's fit set holds one class only: raise --selection-train-samples.")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=1000)).fit(features_fit, y_fit)
    probs = model.predict_proba(features_score)
    cols = {c: i for i, c in enumerate(model.classes_.tolist())}
    picked = np.array([probs[i, cols[y]] if y in cols else 0.0 for i, y in enumerate(y_score.tolist())])
    losses = -np.log(np.clip(picked, PROBE_EPS, 1.0))
    accuracy = float((model.classes_[probs.argmax(1)] == y_score).mean())
    return -float(losses.mean()), {"loss": float(losses.mean()), "accuracy": accuracy}, losses.tolist()


def constant_losses(labels_fit: list, labels_score: list, regression: bool) -> list[float]:
    """Per-example held-out losses of the constant predictor a probe has to beat to show a signal.

    Classification: predicting the fit set's class frequencies for every scoring example, scored
    by cross-entropy (nats) with the probe's floor (PROBE_EPS) for a class the fit set lacks.
    Regression: predicting the fit set's mean, scored by squared error (the probe's units). It is
    what a probe on features carrying no information about the label converges to (its intercept).
    """
    y_fit, y_score = np.asarray(labels_fit), np.asarray(labels_score)
    if regression:
        return ((float(y_fit.astype(np.float64).mean()) - y_score.astype(np.float64)) ** 2).tolist()
    classes, counts = np.unique(y_fit, return_counts=True)
    share = dict(zip(classes.tolist(), (counts / counts.sum()).tolist(), strict=True))
    picked = np.array([share.get(y, 0.0) for y in y_score.tolist()])
    return (-np.log(np.clip(picked, PROBE_EPS, 1.0))).tolist()


def uniform_losses(n: int, num_classes: int) -> list[float]:
    """Per-example losses (nats) of predicting every one of `num_classes` classes with equal
    probability for `n` scoring examples: ln(num_classes) each, the loss of a model that knows
    nothing, not even the class balance."""
    return [float(np.log(num_classes))] * n


def stronger_constant(constants: dict[str, list[float]]) -> tuple[str, list[float]]:
    """(name, per-example losses) of the constant predictor with the lowest mean held-out loss among
    `constants` (name -> per-example losses on the scoring set): the yardstick a candidate must beat
    to show a signal (`olft.select.Selection.record_baseline`). On classification these are the fit
    set's class frequencies (`constant_losses`) and even odds (`uniform_losses`): where the fit and
    scoring sets differ in balance, the frequencies can lose to even odds, and a candidate that
    only beats them (worse than a coin flip) has learned nothing. Picking the stronger by its loss
    on the scoring set favours the constant, never the candidates: the check errs towards "no
    signal". Ties go to the first named."""
    name = min(constants, key=lambda k: float(np.mean(constants[k])))
    return name, list(constants[name])


def gradient_scores(
    stack: Stack, enc: Encoded, layers: list[int], method: MethodConfig, *, batch_size: int, batches: int, seed: int
) -> dict[int, dict[str, float]]:
    """Layer -> {"rgn": ||grad|| / ||weights||, "grad_norm"} of its module at initialisation.

    The module sits on every layer of `layers` at once; the gradients of `batches` training
    batches (seeded order) are summed. Dropout is off, so the result depends on the seed only.
    """
    from olft.methods import apply_method
    from olft.train import loss_fn

    torch.manual_seed(seed)
    stack.head.reset_parameters()
    applied = apply_method(stack, layers, method)
    try:
        params = list(applied.params.values()) + list(stack.head.parameters())
        stack.eval()
        device = stack.head.weight.device
        for idx in train_order(enc.lengths, batch_size, seed)[:batches]:
            batch = collate(enc, idx, stack.num_labels == 1)
            logits = stack(batch.input_ids.to(device), batch.attention_mask.to(device), start=0)
            loss_fn(logits, batch.labels.to(device)).backward()
        out = {}
        for layer in layers:
            prefix = stack.layer_path(layer) + "."
            mine = [p for name, p in applied.params.items() if name.startswith(prefix)]
            grad = torch.sqrt(sum((p.grad.float() ** 2).sum() for p in mine if p.grad is not None) + 0.0)
            weight = torch.sqrt(sum((p.detach().float() ** 2).sum() for p in mine))
            out[layer] = {"grad_norm": float(grad), "rgn": float(grad / weight.clamp(min=1e-12))}
        for p in params:
            p.grad = None
        return out
    finally:
        applied.remove()
