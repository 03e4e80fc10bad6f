"""Peak memory of one way of tuning, each in a fresh process (benchmarks/speed.py --memory).

A process's peak resident set (Linux `VmHWM`) only grows, so every configuration runs in its own
`python benchmarks/speed.py --probe NAME` child. The child loads the model, runs one forward
without a graph (weights loaded lazily from a memory-mapped file are then resident, so they
count in the baseline, not in a configuration's increase), resets its peak (writing 5 to
/proc/self/clear_refs, so loading's transient copies do not count either), builds the
cache where the configuration has one, runs `--memory-steps` optimizer steps on the benchmark's
batches and prints one JSON line: peak RSS during training, RSS after loading, and the part
above it. On a GPU `benchmarks/gpu_speed.py` reports `torch.cuda.max_memory_allocated` instead.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

MB = 1024**2
PROBES = {  # name -> (layer: "all" | "middle" | "final", cache storage or None)
    "all_layer": ("all", None),
    "middle_plain": ("middle", None),
    "middle_cached_memory": ("middle", "memory"),
    "middle_cached_disk": ("middle", "disk"),
    "final_cached": ("final", "memory"),
}


def proc_status_kb(field: str, text: str | None = None) -> int | None:
    """A `kB` field of /proc/self/status (VmHWM, VmRSS, RssAnon), or None off Linux."""
    if text is None:
        try:
            text = Path("/proc/self/status").read_text()
        except OSError:
            return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def layers_of(where: str, num_layers: int) -> list[int]:
    """The tuned layers of a probe: every layer, the middle one (N // 2) or the last."""
    return {"all": list(range(num_layers)), "middle": [num_layers // 2], "final": [num_layers - 1]}[where]


def probe(name: str, stack, enc, batches: list[list[int]], one_round) -> dict:
    """Run probe `name` in this (fresh) process: build its cache, train on `batches`, report peaks.

    `one_round(stack, enc, batches, spec, cache)` is speed.py's step loop (adapter, AdamW).
    """
    import torch

    from olft.cache import ActivationCache
    from olft.data import collate

    where, storage = PROBES[name]
    layers = layers_of(where, stack.num_layers)
    first = collate(enc, batches[0], regression=False)
    stack.eval()
    with torch.no_grad():  # pages in every weight: the baseline is a loaded, used model
        stack(first.input_ids, first.attention_mask)
    after_load = proc_status_kb("VmRSS")
    exact = reset_peak()
    cache = ActivationCache(stack, enc, min(layers), 64, storage=storage) if storage else None
    one_round(stack, enc, batches, (name, layers, "adapter", storage is not None, "auto"), cache)
    peak = proc_status_kb("VmHWM")
    anon, file = proc_status_kb("RssAnon"), proc_status_kb("RssFile")
    record = {"layers": layers if len(layers) < 3 else f"0-{layers[-1]}", "cache": storage, "steps": len(batches),
              "peak_rss_mb": round(peak / 1024, 1) if peak else None, "rss_after_load_mb": round(after_load / 1024, 1) if after_load else None,
              "peak_reset_after_load": exact, "rss_anon_mb_at_end": round(anon / 1024, 1) if anon else None,
              "rss_file_mb_at_end": round(file / 1024, 1) if file else None}  # fmt: skip
    if peak and after_load:
        record["peak_above_load_mb"] = round((peak - after_load) / 1024, 1)
    if cache is not None:
        record["cache_mb"] = round(cache.nbytes / MB, 1)
    return record


def run_probe(script: Path, name: str, argv: list[str], timeout: float = 1800) -> dict:
    """`python script --probe name *argv` in a fresh process; its JSON line, or the error it gave."""
    cmd = [sys.executable, str(script), "--probe", name, *argv]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])
