"""The per-layer plot (layers.png): each candidate layer's score, the chosen layer starred, how
sure the selection is in the title.

matplotlib is imported only when a figure is drawn: reading or writing results never pays for it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from olft.atomic import atomic_path
from olft.report import collapsed_mark, collapsed_text, optimistic_scores
from olft.select import finished_selection, probe_decided
from olft.selectionmd import binomial_se, proxy_label, proxy_name, proxy_round_scores, proxy_scored, selection_verdict
from olft.tasks.metrics import CORRELATIONS
from olft.verdicts import baseline_words, flat_choice_words, loss_name, score_tie, scored_on


def _verdict_title(sel: dict, metric: str) -> str:
    """The plot title's words for `selection_verdict`; for a clear choice, whether the winner shares
    its score (`metric`) with the runner-up, so that the loss chose (`score_tie`), else ''."""
    verdict = selection_verdict(sel)
    if sel.get("no_signal") and probe_decided(sel):
        return " - NO SIGNAL: no probe beats a constant predictor by more than its noise; the choice is a guess"
    if sel.get("trained_no_signal"):  # table.md's "No signal:" for trained finalists (verdicts.trained_no_signal_text)
        return " - NO SIGNAL: no trained candidate beats a constant predictor; the choice is a guess"
    if verdict == "tie":
        how = flat_choice_words(sel)
        return " - TIE: every candidate ranked the same; the choice is " + ("the tie-break" if how.startswith("the tie-break")
                                                                          else "a loss difference under the floor")
    if verdict == "near-tie" and len(sel.get("equivalent") or []) > 1:
        return f" - NEAR-TIE: layers {', '.join(map(str, sel['equivalent']))} within noise of each other"
    if verdict == "near-tie":
        return " - NEAR-TIE: runner-up within one binomial SE"
    ranking = sel.get("ranking") or []
    level = score_tie(sel, ranking)
    if len(ranking) > 1 and ranking[1] in level:
        return f" - layers {', '.join(map(str, level))} tie on {metric}; the {loss_name(sel.get('protocol'))} chose layer {ranking[0]}"
    # A negative confidence is `confidence_text`'s "score and loss disagree" (table.md's words): the
    # winner scored higher, the runner-up has the lower loss. (A probe's guess has no confidence.)
    confidence = sel.get("confidence")
    if confidence is not None and confidence < 0 and len(ranking) > 1:
        return (f" - SCORE AND LOSS DISAGREE: layer {ranking[0]} scores higher, layer {ranking[1]}'s "
                f"{loss_name(sel.get('protocol'))} is {-confidence:.1f} SE lower")
    return ""


def plot_layers(results: dict, path: Path) -> bool:
    """Write `layers_figure` to `path`; False when the results have no finished selection."""
    return save_figure(layers_figure(results), path)


def save_figure(fig, path: Path) -> bool:
    """Write matplotlib Figure `fig` to `path` (PNG, 100 dpi) atomically and close it; False, writing
    nothing, when `fig` is None (nothing to draw)."""
    if fig is None:
        return False
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return True


def layers_figure(results: dict):
    """Score per candidate layer: trained candidates' selection scores on the task metric, one series
    per training budget (binomial standard-error bars where the metric is a proportion; several
    budgets set side by side about each layer, `dodge`), on at least MIN_SCORE_SPAN points, with OLFT's,
    the final-layer and all-layer final scores as reference lines (drawn whenever the run has them,
    even when no candidate was trained); proxy-scored ones (probe, gradient) on their proxy's own
    axis; the middle third shaded, the chosen layer starred, a tie, near-tie or a score and loss
    that disagree said in the title; reference strategies a stopped run had not finished named in the
    legend (`_not_finished_key`). Only finished numbers are drawn. A matplotlib Figure; None when the
    results have no finished selection.
    """
    sel = finished_selection(results)  # an unfinished one has no choice to star: table.md lists its candidates
    if not sel:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    cands = [c for c in sel["candidates"] if c["score"] is not None]
    proxied = [c for c in cands if proxy_scored(c, sel)]
    trained = [c for c in cands if not proxy_scored(c, sel)]
    # Proxy scores get a panel of their own below the trained ones, sharing the layer axis, rather
    # than a twin y-axis: on a twin axis the probe's curve would cross the final-layer and
    # all-layer lines, and a crossing of two unrelated scales reads as a comparison. The task
    # metric's panel is drawn whenever the strategies have final scores, even with no candidate
    # trained (a probe's choice): OLFT's score against the baselines' is the run's result.
    finals = any((s or {}).get("score") is not None for s in (results.get("strategies") or {}).values())
    panels = (["trained"] if trained or finals or not proxied else []) + (["proxy"] if proxied else [])
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, figsize=(FIG_WIDTH, 4 if len(panels) == 1 else 6.5))
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        bucket = results.get("middle_bucket") or []
        if bucket:
            ax.axvspan(min(bucket) - 0.5, max(bucket) + 0.5, color="0.92", zorder=0, label="middle third")
        shift = {}
        if panel == "trained":
            shift = _trained_panel(ax, results, sel, trained)
        else:
            _proxy_panel(ax, sel, proxied)
        best = next((c for c in cands if c["layer"] == sel.get("selected_layer")), None)
        if best is not None and (best in proxied) == (panel == "proxy"):  # the star sits on its own score's axis
            x = best["layer"] + shift.get(best.get("steps"), 0.0)  # on its round's (dodged) point
            ax.plot([x], [100 * best["score"]], "r*", markersize=15, zorder=5, label=f"selected: layer {best['layer']}")
        if panel == "trained":
            widen_to(ax, MIN_SCORE_SPAN)
        if ax is axes[0, 0]:
            _not_finished_key(ax, results)
        # Right of the axes, not on them: inside, with the reference lines spanning the width, no spot
        # is free of data, and "best" put it over the top of an error bar. tight_layout makes room.
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: (_legend_rank(labels[i]), i))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01, 1), borderaxespad=0)  # fmt: skip
    ax = axes[-1, 0]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(-0.5, results.get("num_layers", max((c["layer"] for c in cands), default=0) + 1) - 0.5)
    ax.set_xlabel("layer (0-based)")
    axes[0, 0].set_title(_plot_title(results, sel), fontsize=9)
    fig.tight_layout()
    return fig


# The reference strategies' words in layers.png's legend (`_trained_panel`'s lines), as named in results.json.
REFERENCE_WORDS = {"olft": "OLFT", "final": "final layer", "full": "all layers"}


def _not_finished_key(ax, results: dict) -> None:
    """A legend line (no mark) naming the reference strategies the run asked for that have no score
    yet, neither finished nor failed: a run stopped before them (table.md's "Not finished")."""
    # Without it, a stopped run's plot lacks their lines with nothing said, and reads as a run that never had them.
    done = {*(results.get("strategies") or {}), *(results.get("failed") or {})}
    missing = [REFERENCE_WORDS[n] for n in results.get("strategy_names") or [] if n in REFERENCE_WORDS and n not in done]
    if missing:
        key = f"not finished, no score yet: {', '.join(missing)}"
        ax.plot([], [], " ", label="\n".join(textwrap.wrap(key, LEGEND_CHARS)))


def _legend_rank(label: str) -> int:
    """Legend order: the candidates' scores, the chosen one, the reference lines (and those not
    finished), the shading."""
    reference = "): " in label or label.startswith(("†", "not finished"))  # a dagger's key follows its line
    return 3 if label == "middle third" else 1 if label.startswith("selected") else 2 if reference else 0


# Inches: 7 for the axes and y label, 3 for the legend right of them.
FIG_WIDTH = 10
# Characters of the plot's title per line: a 9-point title (about 13 lowercase characters an inch)
# is centred over the axes, about 6 inches wide once the legend has its room, so a line of about 80
# fits within them; 72 leaves room for wide glyphs.
TITLE_CHARS = 72
# Characters of a legend line: 7-point text, about 3 inches right of the axes.
LEGEND_CHARS = 56


def _plot_title(results: dict, sel: dict) -> str:
    """Model / task / method and the verdict (`_verdict_title`) on one line when it fits in
    TITLE_CHARS, else wrapped, the verdict on lines of its own (a long local model path breaks too)."""
    head, verdict = f"{results['model']} / {results['task']} / {results['method']}", _verdict_title(sel, results["metric"])
    if len(head + verdict) <= TITLE_CHARS:
        return head + verdict
    return "\n".join(textwrap.wrap(head, TITLE_CHARS) + textwrap.wrap(verdict.removeprefix(" - "), TITLE_CHARS))


# One colour and marker per training budget, longest first; red and purple are OLFT's and the proxy's.
BUDGET_STYLES = (("tab:blue", "o"), ("tab:orange", "^"), ("tab:green", "v"), ("tab:brown", "D"), ("tab:olive", "P"))


def _trained_panel(ax, results: dict, sel: dict, cands: list[dict]) -> dict:
    """Trained candidates' task scores (x100), one series per training budget, with one binomial SE
    where the metric is a proportion; the reference strategies as lines. Several budgets are
    dodged (`dodge`) about their layers; returns budget -> its x offset."""
    n = sel.get("score_examples") or 0
    # The binomial SE is a proportion's: rough for F1, meaningless for a correlation (MCC, Pearson,
    # Spearman, which may be negative), so those get no bars, and the label claims none.
    bars = results["metric"] not in CORRELATIONS
    series = _trained_series(sel, cands)
    budgets = sorted(series, key=lambda s: -1 if s is None else s, reverse=True)
    shift = dodge(budgets)
    for i, steps in enumerate(budgets):
        # Halving's early rungs stop sooner: a line joins only scores of the same budget, labelled with it.
        points = series[steps]
        layers = sorted(points)
        color, marker = BUDGET_STYLES[i % len(BUDGET_STYLES)]
        if bars:
            ax.errorbar([k + shift[steps] for k in layers], [100 * points[k] for k in layers],
                        yerr=[100 * binomial_se(points[k], n) for k in layers], fmt="none", ecolor=color, capsize=3)  # fmt: skip
        # The line joins adjacent layers only: a gap (a layer this budget never scored) breaks it, so
        # no stretch of layers that was never measured reads as a measured trend.
        xs = list(range(layers[0], layers[-1] + 1))
        ys = [100 * points[k] if k in points else float("nan") for k in xs]
        xs = [k + shift[steps] for k in xs]
        after = f" after {steps} steps:\n" if len(budgets) > 1 else ": "  # two lines: the legend stays narrow
        # The candidates' scores are the selection's, on its own split: said in the label, so that they are
        # not read against the reference lines below, which are the tuned strategies' final scores.
        ax.plot(xs, ys, f"{marker}-", color=color, label=f"candidates{after}selection score ({sel['protocol']} split, "
                f"n={n}{', ±1 SE' if bars else ''})")  # fmt: skip
    split = (results.get("eval_splits") or ["validation"])[0]
    # OLFT's own final score beside the baselines': the chosen layer's selection score is not it, and
    # may stand above both baselines while OLFT's score on the reported split falls below them.
    olft = results.get("strategies", {}).get("olft") or {}
    chosen = ", ".join(map(str, olft.get("layers") or [sel.get("selected_layer")]))
    optimistic = " ‡" if split in optimistic_scores(results).get("olft", []) else ""
    for name, style, color, what in (("olft", "-.", "tab:red", f"OLFT, layer {chosen}"),
                                     ("final", "--", "0.3", "final layer"), ("full", ":", "0.3", "all layers")):  # fmt: skip
        strategy = results.get("strategies", {}).get(name) or {}
        score = strategy.get("score")
        if score is not None:
            mark = collapsed_mark(strategy, split) + (optimistic if name == "olft" else "")
            same = _same_score_words(results, score) if name == "olft" else ""
            # OLFT's line above the baselines' (Line2D's default zorder is 2): drawn first, a baseline at
            # the same score would hide it, and the legend (`same`) says where it runs along one.
            ax.axhline(100 * score, ls=style, color=color, zorder=2.5 if name == "olft" else 2,
                       label=f"{what} ({split}): {100 * score:.1f}{mark}{same}")  # fmt: skip
            if collapsed_mark(strategy, split):  # the dagger's key, in table.md's words, wrapped to the legend's width
                key = collapsed_text(what, strategy["one_class"][split], split)
                ax.plot([], [], " ", label="\n".join(textwrap.wrap(f"† {key}", LEGEND_CHARS)))
            if name == "olft" and optimistic:  # the double dagger's key, as Table 1's footnote gives it
                key = f"‡ optimistic: its layer was chosen on these same {split} examples"
                ax.plot([], [], " ", label="\n".join(textwrap.wrap(key, LEGEND_CHARS)))
            if name == "olft" and olft.get("layers"):  # OLFT's score at its own layer, on its line
                ax.plot(olft["layers"], [100 * score] * len(olft["layers"]), "D", color=color, label="_olft layer")
    ax.set_ylabel(f"{results['metric']} x100")
    return shift


def _same_score_words(results: dict, score: float) -> str:
    """' (= final layer)' (or '= all layers', '= final layer = all layers') for OLFT's legend label
    where a baseline scored exactly OLFT's `score`: their lines coincide, OLFT's drawn over them."""
    same = [REFERENCE_WORDS[n] for n in ("final", "full")
            if ((results.get("strategies") or {}).get(n) or {}).get("score") == score]  # fmt: skip
    return f" (= {' = '.join(same)})" if same else ""


# The widest spread of one layer's rounds, in layers: the rounds' points and bars sit side by side
# within their layer's column (0.5 either side), clear of the next layer's.
DODGE_WIDTH = 0.3


def dodge(budgets: list) -> dict:
    """Budget -> x offset of its series, spread evenly over DODGE_WIDTH about the layer, in the
    order given: two rounds' error bars at one layer would otherwise be drawn over each other.
    0 for a single round (its points sit on the integer ticks)."""
    if len(budgets) < 2:
        return dict.fromkeys(budgets, 0.0)
    step = DODGE_WIDTH / (len(budgets) - 1)
    return {b: -DODGE_WIDTH / 2 + i * step for i, b in enumerate(budgets)}


# The least y-range of a task-score panel, in score points (x100). Autoscaled to a few candidates
# a tenth of a point apart (common with Pearson/Spearman on STS-B), the axis would span a fraction
# of a point and make noise look like a ranking; a binomial SE at a few hundred scoring examples
# is already 2-3 points, so differences well inside 5 points should look small.
MIN_SCORE_SPAN = 5.0


def widen_to(ax, span: float) -> None:
    """Widen `ax`'s y-range about its middle to at least `span`; a wider range is kept."""
    low, high = ax.get_ylim()
    if high - low < span:
        mid = (low + high) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def _trained_series(sel: dict, cands: list[dict]) -> dict:
    """Steps -> {layer: selection score} for every training round, not just each layer's last:
    `candidates` keeps one entry per layer (a later round replaces its numbers), while each round
    of `rounds` keeps its own scores. Candidates fill in what no round recorded (older results)."""
    series: dict = {}
    for c in cands:
        series.setdefault(c.get("steps"), {})[c["layer"]] = c["score"]
    for r in sel.get("rounds") or []:
        if r.get("stage", "train") != "train" or not r.get("steps"):
            continue  # a proxy's round (probe, gradient) has its own panel
        for k, v in (r.get("scores") or {}).items():
            if v is not None:
                series.setdefault(r["steps"], {})[int(k)] = v
    return series


def _proxy_panel(ax, sel: dict, cands: list[dict]) -> None:
    """Proxy-scored candidates (no training) on the proxy's own scale, a different marker and colour.

    Where the proxy's round recorded its scores of every layer (`proxy_round_scores`), the layers
    it kept for training are drawn too, hollow, so its whole ranking shows; their trained scores
    are in the panel above."""
    proxy = proxy_name(sel)
    # The probe scores held-out examples; the gradient score uses training batches, no scoring set.
    n = f"n={sel.get('score_examples', 0)}" if proxy == "probe" else "training batches"
    scores = proxy_round_scores(sel)
    pruned = sorted(c["layer"] for c in cands)
    kept = sorted(set(scores) - set(pruned))
    if kept:
        layers = sorted(scores)
        ax.plot(layers, [100 * scores[k] for k in layers], "--", color="tab:purple", label=f"{proxy} ({n})")
        ax.plot(pruned, [100 * scores[k] for k in pruned], "s", color="tab:purple", label="pruned: not trained")
        ax.plot(kept, [100 * scores[k] for k in kept], "s", mfc="none", color="tab:purple",
                label="kept: trained (scores above)")  # fmt: skip
    else:
        ax.plot([c["layer"] for c in cands], [100 * c["score"] for c in cands], "s--", color="tab:purple",
                label=f"{proxy} only, not trained ({n})")  # fmt: skip
    if proxy == "probe" and sel.get("baseline_loss") is not None:
        # The probe's yardstick on its own axis (score = -loss x100): a probe below this line does worse than a constant.
        what, unit, _ = baseline_words(sel)
        ax.axhline(-100 * sel["baseline_loss"], ls="-.", color="0.4",
                   label=f"constant predictor ({what}): {scored_on(sel.get('protocol'))} {unit} {sel['baseline_loss']:.3f}")
    ax.set_ylabel(proxy_label(sel).replace(" (", "\n("), fontsize=8)
