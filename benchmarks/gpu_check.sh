#!/usr/bin/env bash
# Multi-process check for a GPU machine: the same `olft run` in one process and on all GPUs
# through `accelerate launch`, answers compared, throughput printed; then bf16, gradient
# checkpointing and --device-map smoke runs. About 5-10 minutes on the default model.
# Speed and memory of one GPU (step time, tokens/s, peak memory; Llama-2-7B-shaped random model):
# benchmarks/gpu_speed.py, see docs/performance.md.
#
#   benchmarks/gpu_check.sh                      # random Llama-shaped model (16 x 1024) built here
#   benchmarks/gpu_check.sh /path/to/Llama-2-7b  # a real model folder (slower; use bf16 weights)
#
# Data: SST-2 from $GLUE_DIR when it is there, else a small generated SST-2-like set.
# Environment: PY (python with olft installed, default .venv/bin/python), WORK (scratch folder),
# TRAIN (training examples, default 4000), DTYPE (weights, default fp32; bf16 for 7B models).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-$(mktemp -d /tmp/olft-gpu-check.XXXX)}
TRAIN=${TRAIN:-4000}
DTYPE=${DTYPE:-fp32}
MODEL=${1:-}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -lt 1 ]; then
    echo "gpu_check: no CUDA device visible; nothing to check here." >&2
    exit 1
fi
echo "gpu_check: $NGPU GPU(s): $("$PY" -c "import torch; print(torch.cuda.get_device_name(0))"); scratch in $WORK"

if [ -z "$MODEL" ]; then
    MODEL=$WORK/llama-16x1024
    "$PY" - "$MODEL" <<'EOF'
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from tiny import make_model_folder
make_model_folder("llama", Path(sys.argv[1]), layers=16, hidden=1024)
EOF
fi
GLUE=${GLUE_DIR:-}
if [ -z "$GLUE" ] || [ ! -f "$GLUE/SST-2/train.tsv" ]; then
    GLUE=$WORK/glue
    "$PY" -c "import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from tiny import make_glue; make_glue(Path('$GLUE'), n_train=$TRAIN, n_dev=500)"
fi

COMMON=(run --model "$MODEL" --task sst2 --glue-dir "$GLUE" --dtype "$DTYPE" --max-train-samples "$TRAIN"
        --max-eval-samples 500 --epochs 1 --batch-size 32 --eval-batch-size 64 --strategies olft,final,full
        --selection-train-samples 512 --selection-eval-samples 256 -q)
launch() {  # launch NPROC OUT [olft options...]
    local n=$1 out=$2
    shift 2
    local start=$SECONDS
    if [ "$n" -gt 1 ]; then
        "$PY" -m accelerate.commands.launch --multi_gpu --num_processes "$n" --num_machines 1 \
            --mixed_precision no --dynamo_backend no --main_process_port $((29500 + RANDOM % 1000)) \
            -m olft.cli "${COMMON[@]}" --out "$out" "$@" > "$out.log" 2>&1
    else
        "$PY" -m olft.cli "${COMMON[@]}" --out "$out" "$@" > "$out.log" 2>&1
    fi || { echo "gpu_check: run $out failed; last lines of $out.log:" >&2; tail -30 "$out.log" >&2; exit 1; }
    echo "  $(basename "$out"): $((SECONDS - start)) s wall"
}

echo "1) one process vs $NGPU processes, fp32 autocast off: answers must agree"
launch 1 "$WORK/one" --mixed-precision no
if [ "$NGPU" -gt 1 ]; then
    launch "$NGPU" "$WORK/all" --mixed-precision no
else
    echo "  only one GPU: the multi-process comparison needs two or more (NCCL runs one process per GPU)"
fi
echo "2) bf16 autocast on all GPUs"
launch "$NGPU" "$WORK/bf16" --mixed-precision bf16
echo "3) gradient checkpointing, bf16"
launch "$NGPU" "$WORK/ckpt" --mixed-precision bf16 --gradient-checkpointing
echo "4) --device-map auto, one process"
launch 1 "$WORK/devmap" --mixed-precision bf16 --device-map auto --strategies final --max-steps 20

"$PY" - "$WORK" <<'EOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
runs = {p.name: json.loads((p / "results.json").read_text()) for p in sorted(work.iterdir()) if (p / "results.json").is_file()}
print(f"\n{'run':8} {'procs':>5} {'prec':>5} {'select s':>9} {'cand/s':>7}  strategy: examples/s (score)")
for name, r in runs.items():
    d, sel = r["distributed"], r.get("selection")
    wall = d.get("selection_wall", {}).get("seconds")
    rate = f"{len(sel['candidates']) / wall:7.2f}" if sel and wall else "      -"
    parts = []
    for s, e in r["strategies"].items():
        ex = e["steps"] * d["effective_batch_size"] / max(e["train_seconds"], 1e-9)
        parts.append(f"{s}: {ex:8.1f} ({e['score']:.4f})")
    print(f"{name:8} {d['world_size']:>5} {d['mixed_precision']:>5} {wall or 0:9.1f} {rate}  " + ", ".join(parts))
one, many = runs.get("one"), runs.get("all")
if one and many:
    same = one["selection"]["selected_layer"] == many["selection"]["selected_layer"]
    scores = all(a["score"] == b["score"] for a, b in zip(one["selection"]["candidates"], many["selection"]["candidates"]))
    gap = max(abs(one["strategies"][s]["score"] - many["strategies"][s]["score"]) for s in one["strategies"])
    print(f"\none vs {many['distributed']['world_size']} processes: same layer {same}, candidate scores identical {scores}, "
          f"largest strategy score gap {gap:.2e} (float rounding; GPU kernels are not bitwise reproducible)")
    sys.exit(0 if same and gap < 0.02 else 1)
EOF
