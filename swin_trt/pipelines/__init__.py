"""The stages a user runs, one module each (train, evaluate, calibrate with fallback, qat,
sensitivity, export, deploy = bench and gate), as a few public functions the CLI and the demo
call. The layers they chain (models, data, quantization, onnx, runtimes, parity) know nothing of
them."""
