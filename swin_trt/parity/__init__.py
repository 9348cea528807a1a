"""The parity gate: a deployed engine against the PyTorch fake-quant reference it claims to be.

- :mod:`~swin_trt.parity.provenance`: does the engine come from the reference (sidecar chain)?
- :mod:`~swin_trt.parity.compare`: run FP32, fake-quant and the engine; accuracy and logit error;
- :mod:`~swin_trt.parity.gate`: the bounds and the verdict;
- :mod:`~swin_trt.parity.localize`: where, layer by layer, an engine leaves its reference.
"""
