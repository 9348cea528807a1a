"""Low-bit PTQ methods (``calibrate --ptq-method``; docs/lowbit.md), one module each.

Every method changes only what an ordinary Q/DQ graph already holds: FP weights, biases,
LayerNorm affine parameters, per-channel weight scales and per-tensor activation ranges. So the
calibrated checkpoint stores the transformed model as plain state and export, inspect, the
conformance check and the gate see nothing new.

- ``smoothquant`` (:mod:`.smooth`) and ``ln-reparam`` (:mod:`.layernorm`) rewrite the FP model
  before quantizers are inserted, from per-channel statistics of calibration images;
- ``adaround`` (:mod:`.adaround`), ``qwt`` (:mod:`.qwt`) and ``bias-correction`` (:mod:`.bias`)
  work on the calibrated model, one unit (Swin block or PatchMerging) at a time, against the FP
  model's output (:mod:`.reconstruct` walks the units).
"""
