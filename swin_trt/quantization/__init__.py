"""INT8 quantization of Swin: quantizer modules, placement recipes, calibrators, checkpoints.

Small pieces with one job each, in the manner of NVIDIA Model Optimizer's quantization package;
see docs/quantization.md for why these are swin-trt's own rather than modelopt's.
"""
