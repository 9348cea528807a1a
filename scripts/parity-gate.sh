#!/usr/bin/env bash
# Parity gate for a CI job: calibrate -> export -> inspect -> build -> bench, failing (non-zero
# exit) when any step fails or the deployed engine drifts from its fake-quant reference.
#
#   scripts/parity-gate.sh --checkpoint FP.pth --data-path DIR [--backend onnxruntime|tensorrt]
#       [--model NAME | --cfg FILE] [--zip] [--workdir DIR] [--num-calib-batch N] [--calib-batchsz N]
#       [--max-batches N] [--batch-size N] [--min-agreement PCT] [--max-top1-drop PT] [--workers N] [--sweep]
#       [--timing-cache FILE]
#
# --backend tensorrt exports the TensorRT graph (--target tensorrt: FP16, INT8 weights) and needs
# a GPU with TensorRT (the NGC container); onnxruntime runs anywhere (exact mode: the closest
# parity on CPUs). The gate's bounds default to those for the graph's precision (docs/parity.md);
# --min-agreement/--max-top1-drop override two of them. --sweep also builds the baseline engine
# (the same model without Q/DQ: FP16 for tensorrt) and times both at batch 1, 8, 32, 128.
# TensorRT engines get the profile the run needs: batch 1 to --batch-size (tuned for it), or 1 to
# 128 with --sweep; --timing-cache reads and extends a TensorRT timing cache (faster rebuilds).
# Results: <workdir>/{calibrate,export,inspect,build,bench}.json.
# SWIN_TRT overrides the command (default: swin-trt), e.g. SWIN_TRT="python -m swin_trt".
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

backend=onnxruntime workdir=parity-gate checkpoint="" data_path="" model_args=() zip_args=()
num_calib_batch=10 calib_batchsz=8 max_batches="" batch_size=64 bound_args=() workers=2 sweep=false timing_cache=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --backend) backend="$2"; shift 2 ;;
    --checkpoint) checkpoint="$2"; shift 2 ;;
    --data-path) data_path="$2"; shift 2 ;;
    --model|--cfg) model_args=("$1" "$2"); shift 2 ;;
    --zip) zip_args=(--zip); shift ;;
    --workdir) workdir="$2"; shift 2 ;;
    --num-calib-batch) num_calib_batch="$2"; shift 2 ;;
    --calib-batchsz) calib_batchsz="$2"; shift 2 ;;
    --max-batches) max_batches="$2"; shift 2 ;;
    --batch-size) batch_size="$2"; shift 2 ;;
    --min-agreement|--max-top1-drop) bound_args+=("$1" "$2"); shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --sweep) sweep=true; shift ;;
    --timing-cache) timing_cache="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "parity-gate.sh: error: unknown argument $1" >&2; usage ;;
  esac
done
[[ -n "$checkpoint" && -n "$data_path" ]] || { echo "parity-gate.sh: error: --checkpoint and --data-path are required" >&2; usage; }
case "$backend" in
  onnxruntime) target=onnxruntime engine="$workdir/engine.onnx" build_args=(--ort-mode exact) ;;
  tensorrt) target=tensorrt engine="$workdir/engine.plan" build_args=()
    if $sweep; then build_args=(--min-batch 1 --max-batch 128); else build_args=(--min-batch 1 --opt-batch "$batch_size" --max-batch "$batch_size"); fi
    [[ -n "$timing_cache" ]] && build_args+=(--timing-cache "$timing_cache") ;;
  *) echo "parity-gate.sh: error: --backend must be onnxruntime or tensorrt, got $backend" >&2; exit 2 ;;
esac
read -r -a swin_trt <<< "${SWIN_TRT:-swin-trt}"
bench_limit=()
[[ -n "$max_batches" ]] && bench_limit=(--max-batches "$max_batches")
mkdir -p "$workdir"

step() { echo "== parity-gate: $*" >&2; }

step "calibrate (int8-mode trt, $num_calib_batch x $calib_batchsz images)"
"${swin_trt[@]}" calibrate --resume "$checkpoint" "${model_args[@]}" --data-path "$data_path" "${zip_args[@]}" --int8-mode trt \
  --num-calib-batch "$num_calib_batch" --calib-batchsz "$calib_batchsz" --calib-output-path "$workdir/calib" --skip-eval \
  --workers "$workers" --json "$workdir/calibrate.json"
calibrated=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["checkpoint"])' "$workdir/calibrate.json")

step "export --target $target"
"${swin_trt[@]}" export --resume "$calibrated" --target "$target" --output "$workdir/model.onnx" --json "$workdir/export.json"

step "inspect (placement vs recipe, TensorRT lint)"
"${swin_trt[@]}" inspect "$workdir/model.onnx" --target "$target" --json "$workdir/inspect.json"

step "build --backend $backend"
"${swin_trt[@]}" build --backend "$backend" --onnx "$workdir/model.onnx" --output "$engine" "${build_args[@]}" --json "$workdir/build.json"

speed_args=()
if $sweep; then
  step "baseline: export --no-quant --target $target, build --backend $backend"
  "${swin_trt[@]}" export --resume "$calibrated" --no-quant --target "$target" --output "$workdir/baseline.onnx" --json "$workdir/baseline_export.json"
  "${swin_trt[@]}" build --backend "$backend" --onnx "$workdir/baseline.onnx" --output "$workdir/baseline.${engine##*.}" "${build_args[@]}" \
    --json "$workdir/baseline_build.json"
  speed_args=(--sweep --baseline-engine "$workdir/baseline.${engine##*.}")
fi

step "bench (the default gate for the graph's precision${bound_args[*]:+, }${bound_args[*]})"
"${swin_trt[@]}" bench --reference "$calibrated" --engine "$engine" --data-path "$data_path" "${zip_args[@]}" --batch-size "$batch_size" \
  --workers "$workers" "${bench_limit[@]}" "${bound_args[@]}" "${speed_args[@]}" --json "$workdir/bench.json"
