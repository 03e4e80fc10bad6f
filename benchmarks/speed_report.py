"""The speed benchmark's report: headline ratios, targets, layer-pass models, Markdown tables.

Pure functions of the measurements dictionary of a benchmarks/speed.py results file.
"""

from __future__ import annotations

TARGETS = {  # ratio -> upper bound (issue 16's three, then the earlier ones)
    "olft_epoch_vs_best_peer": 0.34,
    "cache_build_vs_plain_forward_epoch": 1.0,
    "peak_memory_middle_vs_all_layer": 0.6,
    "middle_cached_vs_all_layer": 0.55,
    "final_cached_vs_all_layer": 0.10,
    "selection_cached_vs_plain": 0.60,
}


def seconds_of(m: dict | None) -> float | None:
    """The figure a measurement is compared by: median s/step, or wall seconds of a whole run."""
    if not m:
        return None
    return m.get("median_s", m.get("seconds", m.get("epoch_s")))


def cpu_of(m: dict | None) -> float | None:
    """CPU seconds of a measurement (median step, or whole run), where it was recorded."""
    if not m:
        return None
    return m.get("cpu_median_s", m.get("cpu_s"))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _time_ratio(ms: dict[str, dict], num: str, dens: list[str], basis: str) -> float | None:
    """num over the fastest of dens, by CPU seconds where all have them ("cpu"), else by wall."""
    get = cpu_of if basis == "cpu" else seconds_of
    values = [get(ms.get(d)) for d in dens if ms.get(d)]
    if basis == "cpu" and (cpu_of(ms.get(num)) is None or any(v is None for v in values)):
        return None
    values = [v for v in values if v is not None]
    return _ratio(get(ms.get(num)), min(values) if values else None)


def ratios(ms: dict[str, dict], basis: str = "cpu") -> dict[str, float]:
    """The headline ratios (issue 16) from the measurements present; absent inputs, absent ratio.

    olft_epoch_vs_best_peer: olft's middle-layer epoch, cache build included, over the fastest
    peer epoch on the same layer (the best recipe or the pad-to-128 reference, whichever is
    faster). Time ratios are by CPU seconds (`basis="cpu"`, every configuration runs on one
    thread, so CPU time is its work, while wall time on a shared machine adds waiting for other
    jobs), falling back to wall seconds where CPU time was not recorded; `basis="wall"`: wall
    seconds throughout. Peak memory ratios use the peak RSS during training (`peak_rss_mb`: the process,
    weights and libraries included), and the `above_load` one only what training adds to it.
    """

    def peak(name: str) -> float | None:
        return ms.get(name, {}).get("peak_rss_mb")

    def above(name: str) -> float | None:
        return ms.get(name, {}).get("peak_above_load_mb")

    def t(num: str, *dens: str) -> float | None:
        exact = _time_ratio(ms, num, list(dens), basis)
        return exact if exact is not None else _time_ratio(ms, num, list(dens), "wall")

    out = {
        "olft_epoch_vs_best_peer": t("olft_epoch_middle", "peer_epoch_middle", "peer_pad128_middle"),
        "olft_final_epoch_vs_best_peer": t("olft_epoch_final", "peer_epoch_final"),
        "olft_all_layer_epoch_vs_peer": t("olft_epoch_all_layer", "peer_epoch_all_layer"),
        "middle_cached_vs_all_layer": t("middle_cached", "all_adapter"),
        "final_cached_vs_all_layer": t("final_cached", "all_adapter"),
        "cache_build_vs_plain_forward_epoch": t("cache_build_final", "plain_forward_epoch"),
        "peak_memory_middle_vs_all_layer": _ratio(peak("memory_middle_cached_memory"), peak("memory_all_layer")),
        "peak_memory_above_load_middle_vs_all_layer": _ratio(above("memory_middle_cached_memory"), above("memory_all_layer")),
        "peak_memory_middle_disk_vs_all_layer": _ratio(peak("memory_middle_cached_disk"), peak("memory_all_layer")),
        "peak_memory_final_vs_all_layer": _ratio(peak("memory_final_cached"), peak("memory_all_layer")),
        "selection_cached_vs_plain": t("selection_cached", "selection_plain"),
    }  # fmt: skip
    return {k: v for k, v in out.items() if v is not None}


def targets(r: dict[str, float]) -> dict[str, dict]:
    """Each target ratio present in `r`, with its bound and whether it is met."""
    return {k: {"ratio": r[k], "target": f"<= {bound}", "met": r[k] <= bound} for k, bound in TARGETS.items() if k in r}


def selection_layer_model(n: int, candidates: list[int]) -> dict:
    """Cached / plain selection cost counted in layer passes (forward = backward = 1 per layer).

    A plain step at candidate L runs n forward and n - L backward passes, a cached one n - L of
    each; with the pooled-token shortcut the last layer costs about nothing in both. Training
    steps only (scoring, cache build and fixed costs left out): the best exact caching can do.
    """
    whole = sum(2 * (n - c) for c in candidates) / sum(2 * n - c for c in candidates)
    pooled = sum(2 * (n - c - 1) for c in candidates) / sum(2 * n - c - 2 for c in candidates)
    return {"whole_last_layer": round(whole, 4), "pooled_last_layer": round(pooled, 4),
            "formula": "sum 2(N-L) / sum (2N-L); with the pooled shortcut sum 2(N-L-1) / sum (2N-L-2)"}  # fmt: skip


def epoch_layer_model(n: int, layer: int, pooled: bool, epochs: int = 1) -> float:
    """olft's epochs over the best peer's at `layer`, counted in layer passes (backward = 2 forward).

    Both pad per batch, so only the work differs: olft builds the cache once (`layer` forward
    passes) and then runs layers `layer..n-1` forward and backward each epoch (the last one at
    the pooled token only, about free, where `pooled`); the peer runs all n forward and
    `layer..n-1` backward every epoch. At the middle layer one epoch comes out near 1.0: the
    cache saves exactly the frozen forward it costs to build, and pays off only from the second
    epoch (or the next selection candidate) on.
    """
    top = n - layer - (1 if pooled else 0)
    olft = layer + epochs * 3 * top
    peer = epochs * (n + 2 * (n - layer))
    return round(olft / peer, 4)


def _note(m: dict) -> str:
    parts = []
    if "cache_build_s" in m and m["cache_build_s"]:
        parts.append(f"cache build {m['cache_build_s']} s")
    if "pooled_shortcut" in m:
        parts.append(f"pooled-token shortcut: {m['pooled_shortcut'].split(' (')[0]}")
    for key in ("padding", "from"):
        if key in m:
            parts.append(str(m[key]))
    if "rounds_s" in m and len(m["rounds_s"]) > 1:
        parts.append(f"rounds {m['rounds_s']}")
    if cpu_of(m) is not None:
        parts.append(f"CPU {cpu_of(m):.3f} s")
    return "; ".join(parts)


def markdown(data: dict) -> str:
    """The time measurements, the memory table, the headline ratios and targets, as Markdown."""
    ms, rel = data["measurements"], data.get("ratio_to_all_layer_adapter", {})
    lines = ["| measurement | seconds | x all-layer adapter step | note |", "|---|---:|---:|---|"]
    for name, m in ms.items():
        if name.startswith("memory_") or "error" in m:
            continue
        kind = "s/step (median)" if name in rel else "s (median)" if "wall_s" in m else "s (whole run)"
        ratio = f"{rel[name]:.3f}" if name in rel else ""
        lines.append(f"| {name} | {seconds_of(m):.3f} {kind} | {ratio} | {_note(m)} |")
    mem = {k.removeprefix("memory_"): m for k, m in ms.items() if k.startswith("memory_")}
    if mem:
        lines += ["", "| peak memory (fresh process each) | peak RSS MB | above loaded model MB | cache MB |", "|---|---:|---:|---:|"]
        for name, m in mem.items():
            if "error" in m:
                lines.append(f"| {name} | failed: {m['error']} | | |")
                continue
            lines.append(f"| {name} | {m['peak_rss_mb']} | {m.get('peak_above_load_mb', '')} | {m.get('cache_mb', '')} |")
    lines += ["", "| ratio | value | target | |", "|---|---:|---:|---|"]
    for name, value in data.get("ratios", {}).items():
        t = data.get("targets", {}).get(name)
        lines.append(f"| {name} | {value:.3f} | {t['target'] if t else ''} | {('met' if t['met'] else 'missed') if t else ''} |")
    if "selection_layer_model" in data and "selection_cached" in ms:
        m = data["selection_layer_model"]
        lines += ["", f"Layer-pass model of selection cached / plain (training steps only): {m['pooled_last_layer']:.3f} "
                      f"with the pooled-token shortcut, {m['whole_last_layer']:.3f} with the whole last layer."]  # fmt: skip
    return "\n".join(lines)
