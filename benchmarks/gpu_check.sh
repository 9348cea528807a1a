#!/usr/bin/env bash
# Every GPU check in one run, meant to finish in under 8 minutes on one data-centre GPU (not yet
# timed: no GPU was available where this was written). Run from anywhere:
#
#   benchmarks/gpu_check.sh            # PYTHON=.venv/bin/python benchmarks/gpu_check.sh to pick the interpreter
#
# Checks (each logged to benchmarks/results/gpu_check/<name>.log, figures under benchmarks/results/):
#   train       swin_micro trained on --device cuda (short recipe: 12 epochs)
#   calibrate   PTQ on --device cuda, and the same calibration on the CPU: the amax must agree
#   eval        fake-quant eval on --device cuda against the FP weights (--compare-fp)
#   cuda_eval   FP32, FP16 autocast and fake-quant on CUDA (benchmarks/cuda_eval.py)
#   torchrun    eval and calibrate under torchrun with NCCL (2 processes when 2 GPUs exist, else 1)
#   cuda_evaluator  the parity gate with its references on the GPU (`bench --device cuda`: uint8
#               batches normalised on the GPU, FP32 and fake-quant in true FP32, comparison on the
#               GPU) against an onnxruntime engine, beside the same bench on the CPU: both must pass
#               the default gate (no TensorRT needed)
#   tensorrt_*  where TensorRT imports: scripts/parity-gate.sh --backend tensorrt --sweep on swin_micro
#               (the CUDA evaluator with a TensorRT engine, its I/O as CUDA tensors, and the INT8 vs
#               FP16 batch sweep from CUDA events), --localize through a TensorRT debug engine, the
#               engine's layer precisions (swin-trt inspect), and Swin-T INT8 vs FP16 engine throughput
#               (benchmarks/tensorrt_throughput.py); skipped with the reason otherwise.
# Writes benchmarks/results/gpu_check/summary.json; exits 1 if any check failed.
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python=${PYTHON:-python}
read -r -a swin <<< "$python -m swin_trt"
out="$repo/benchmarks/results/gpu_check"
work="${WORK:-$(mktemp -d)}"
mkdir -p "$out"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
: > "$out/checks.tsv"

run_check() {  # run_check NAME COMMAND...: time it, log it, record passed/failed
  local name=$1 start status
  shift
  start=$(date +%s)
  echo "== $name" >&2
  if "$@" > "$out/$name.log" 2>&1; then status=passed; else status=failed; tail -5 "$out/$name.log" >&2; fi
  printf '%s\t%s\t%s\t\n' "$name" "$status" "$(($(date +%s) - start))" >> "$out/checks.tsv"
}

skip_check() {  # skip_check NAME REASON
  echo "== $1: skipped ($2)" >&2
  printf '%s\tskipped\t0\t%s\n' "$1" "$2" >> "$out/checks.tsv"
}

if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check.sh: error: no CUDA GPU visible to torch: nothing to check here" >&2
  exit 2
fi
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
procs=$((gpus >= 2 ? 2 : 1))
"$python" - "$out/environment.json" <<'EOF'
import json, subprocess, sys
import torch
sys.path.insert(0, "benchmarks")
from machine import machine
try:
    import tensorrt
    trt = tensorrt.__version__
except ImportError:
    trt = None
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], capture_output=True, text=True).stdout
json.dump({**machine(), "gpus": smi.strip().splitlines(), "torch": torch.__version__, "cuda": torch.version.cuda, "tensorrt": trt}, open(sys.argv[1], "w"), indent=2)
EOF

run_check data "${swin[@]}" data digits --output "$work/digits"
run_check train "${swin[@]}" train --model swin_micro --data-path "$work/digits" --output "$work/micro" --epochs 12 --device cuda --json "$out/train.json"
fp="$work/micro/swin_micro.pth"

calibrate() {  # calibrate DEVICE: the same images and seed on either device
  "${swin[@]}" calibrate --resume "$fp" --data-path "$work/digits" --int8-mode trt --num-calib-batch 4 --calib-batchsz 16 \
    --calib-output-path "$work/calib_$1" --device "$1" --json "$out/calibrate_$1.json" \
    && "${swin[@]}" quant-summary --resume "$work/calib_$1/swin_micro_calib.pth" --json "$work/amax_$1.json"
}
compare_amax() {
  "$python" - "$work/amax_cuda.json" "$work/amax_cpu.json" <<'EOF'
import json, sys
import numpy as np
cuda, cpu = (json.load(open(p)) for p in sys.argv[1:])
worst = max(float(np.max(np.abs(np.subtract(cuda[k], cpu[k])) / np.maximum(np.abs(cpu[k]), 1e-12))) for k in cpu if cpu[k] is not None)
print(f"largest relative amax difference CUDA vs CPU: {worst:.2e} over {len(cpu)} quantizers")
sys.exit(0 if worst < 1e-3 else 1)
EOF
}
calibrate_both() { calibrate cuda && calibrate cpu; }
run_check calibrate calibrate_both
run_check calibrate_cuda_vs_cpu compare_amax
calibrated="$work/calib_cuda/swin_micro_calib.pth"
run_check eval "${swin[@]}" eval --resume "$calibrated" --compare-fp --data-path "$work/digits" --device cuda --json "$out/eval_fakequant_cuda.json"
run_check cuda_eval "$python" benchmarks/cuda_eval.py --resume "$fp" --calibrated "$calibrated" --data-path "$work/digits"
run_check torchrun_eval "$python" -m torch.distributed.run --nproc_per_node "$procs" -m swin_trt eval --resume "$fp" --data-path "$work/digits" \
  --device cuda --json "$out/eval_torchrun.json"
run_check torchrun_calibrate "$python" -m torch.distributed.run --nproc_per_node "$procs" -m swin_trt calibrate --resume "$fp" --data-path "$work/digits" \
  --int8-mode trt --num-calib-batch 2 --calib-batchsz 16 --calib-output-path "$work/calib_torchrun" --device cuda --skip-eval

cuda_evaluator() {  # the same onnxruntime engine gated with CPU references and with CUDA references
  "${swin[@]}" export --resume "$calibrated" --output "$work/evaluator.onnx" \
    && "${swin[@]}" build --onnx "$work/evaluator.onnx" --output "$work/evaluator.ort.onnx" --ort-mode exact \
    && "${swin[@]}" bench --reference "$calibrated" --engine "$work/evaluator.ort.onnx" --data-path "$work/digits" --device cpu \
      --json "$out/bench_references_cpu.json" \
    && "${swin[@]}" bench --reference "$calibrated" --engine "$work/evaluator.ort.onnx" --data-path "$work/digits" --device cuda \
      --json "$out/bench_references_cuda.json"
}
run_check cuda_evaluator cuda_evaluator

if reason=$("$python" -c 'import tensorrt' 2>&1); then
  run_check tensorrt_parity_gate env SWIN_TRT="$python -m swin_trt" scripts/parity-gate.sh --backend tensorrt --checkpoint "$fp" \
    --data-path "$work/digits" --workdir "$work/gate" --sweep
  cp "$work/gate/bench.json" "$out/tensorrt_bench.json" 2>/dev/null
  run_check tensorrt_localize "${swin[@]}" bench --reference "$work/gate/calib/swin_micro_calib.pth" --engine "$work/gate/engine.plan" \
    --data-path "$work/digits" --max-batches 1 --no-gate --localize --localize-plot "$out/tensorrt_localize.png" --json "$out/tensorrt_localize.json"
  run_check tensorrt_inspect "${swin[@]}" inspect "$work/gate/engine.plan" --layers --json "$out/tensorrt_layers.json"
  run_check tensorrt_throughput "$python" benchmarks/tensorrt_throughput.py --data-path "$work/digits" --workdir "$work/swin_t"
else
  for name in tensorrt_parity_gate tensorrt_localize tensorrt_inspect tensorrt_throughput; do
    skip_check "$name" "TensorRT does not import: $(echo "$reason" | tail -1)"
  done
fi

"$python" - "$out/checks.tsv" "$out/summary.json" <<'EOF'
import csv, json, sys
rows = [dict(zip(("check", "status", "seconds", "note"), r)) for r in csv.reader(open(sys.argv[1]), delimiter="\t")]
for row in rows:
    row["seconds"] = int(row["seconds"])
json.dump({"checks": rows, "seconds": sum(r["seconds"] for r in rows)}, open(sys.argv[2], "w"), indent=2)
width = max(len(r["check"]) for r in rows)
for r in rows:
    print(f"{r['check']:<{width}}  {r['status']:<7}  {r['seconds']:>4} s  {r['note']}")
sys.exit(1 if any(r["status"] == "failed" for r in rows) else 0)
EOF
