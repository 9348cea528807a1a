"""Inference backends for exported graphs: onnxruntime (CPU, or CUDA with onnxruntime-gpu) and
TensorRT (NVIDIA GPUs)."""
