#!/usr/bin/env bash
# Every GPU check in one run, built to finish in 8 minutes on one H100 (the estimate and how it is
# reached: docs/tensorrt.md, "The GPU check"). Run from anywhere:
#
#   benchmarks/gpu_check.sh [--cuda-only] [--device cpu] [--workdir DIR] [--timing-cache FILE] [--output FILE]
#   PYTHON=.venv/bin/python benchmarks/gpu_check.sh      # pick the interpreter
#
# Checks (benchmarks/gpu_check.py runs them in one process, in this order; a check whose inputs
# failed or were skipped is skipped with that reason):
#   data, train             digits; swin_micro trained on the GPU (12 epochs)
#   calibrate, calibrate_cpu, calibrate_device_vs_cpu
#                           PTQ on the GPU and on the CPU (same images and seed, TF32 off): amax agree to 1e-3
#   eval                    fake-quant eval on the GPU against the FP weights (--compare-fp)
#   cuda_eval               FP32, FP16 autocast and fake-quant on CUDA (benchmarks/cuda_eval.py)
#   torchrun_eval, torchrun_calibrate
#                           under torchrun with NCCL (2 processes when 2 GPUs exist, else 1)
#   cuda_evaluator          the parity gate with references on the GPU and on the CPU, onnxruntime engine
#   swin_t_graphs           Swin-T calibrated and exported once (INT8 and FP16 TensorRT graphs)
#   tensorrt_parity_gate    scripts/parity-gate.sh --backend tensorrt on swin_micro (engine profile 1..64): the right pairing
#   tensorrt_wrong_pairing  another calibration's engine against that reference: the gate must fail it (r recorded)
#   tensorrt_localize       bench --localize through a TensorRT debug engine
#   tensorrt_inspect        the engine's layer precisions (swin-trt inspect --layers)
#   tensorrt_fp8            an FP8 (E4M3) engine of the micro model gated against its reference, with its
#                           FP8 layer counts (skipped below compute capability 8.9: no FP8 tensor cores)
#   tensorrt_throughput     Swin-T INT8 vs FP16 engines (profile 1..128) at batch 1, 8, 32, 128, CUDA-event timed
#
# Prints each check's seconds and a closing table (passed / failed / skipped with the reason).
# Exit status: 1 if a check failed; 3 if any check was skipped (no GPU, no TensorRT), except the
# TensorRT checks under --cuda-only; 0 otherwise. Figures, with GPU name, driver, CUDA, TensorRT and
# torch versions: benchmarks/results/gpu/<gpu name>.json; logs: <workdir>/logs/<check>.log.
# --device cpu runs every check that does not need CUDA itself on the CPU (times the plumbing).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export PYTHONPATH="$repo/benchmarks:$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
