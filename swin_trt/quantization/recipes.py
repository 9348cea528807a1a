"""Where quantizers go: the three placement recipes, as data.

- ``1`` (the reference's ``--int8-mode 1``): input, weight and GEMM-output quantizers on every
  qkv, proj, fc1, fc2 and PatchMerging reduction; q, k, v and the softmax output.
- ``2`` (``--int8-mode 2``): mode 1 without the fc2 and PatchMerging GEMM-output quantizers
  (needed for Swin-L PTQ in the reference: 83.53 -> 85.93).
- ``trt``: what TensorRT's explicit quantization fuses best: Q/DQ on every GEMM input (weights
  per channel), on both attention batched-matmul inputs and the softmax output; no GEMM-output
  quantizers and no residual adds. fc2 + bias + the MLP residual add fuse into one GEMM whose
  output stays in FP16 whether or not the add's skip operand carries Q/DQ (TensorRT makes the
  fused output INT8 only when a QuantizeLinear follows the add; in Swin the next LayerNorm does),
  so a Q/DQ there buys no fusion and costs a rounding of the residual stream: measured and
  dropped in 0.2 (docs/tensorrt.md, "The MLP residual's Q/DQ").
- ``trt-residual``: the ``trt`` recipe before 0.2, with the MLP residual's skip operand
  quantized (to reproduce what was measured with it); a checkpoint calibrated for ``trt`` then holds amax
  for those quantizers and is read as this recipe (:func:`swin_trt.quantization.checkpoint.stored_recipe`), so its graphs, and the
  gate's fresh export, stay what they were.

Never quantized: softmax input, LayerNorm inputs, patch embedding, final norm and the head.
"""

from __future__ import annotations

from dataclasses import dataclass

from swin_trt.errors import SwinTrtError

CALIBRATORS = ("max", "percentile", "entropy", "mse")
LINEAR_KINDS = ("qkv", "proj", "fc1", "fc2", "reduction")
ATTENTION_QUANTIZERS = ("q_quantizer", "k_quantizer", "v_quantizer", "softmax_quantizer")


@dataclass(frozen=True)
class Recipe:
    name: str
    gemm_outputs: frozenset[str]  # linear kinds whose GEMM output is quantized
    residuals: frozenset[str]  # block quantizers on residual-add skip operands that are enabled
    description: str

    def enables(self, kind: str, quantizer: str) -> bool:
        """Whether the quantizer ``quantizer`` of a module of ``kind`` is on in this recipe."""
        if kind in LINEAR_KINDS:
            return quantizer in ("input_quantizer", "weight_quantizer") or (quantizer == "output_quantizer" and kind in self.gemm_outputs)
        if kind == "attention":
            return quantizer in ATTENTION_QUANTIZERS
        if kind == "block":
            return quantizer in self.residuals
        return False

    def covered_by(self, other: Recipe) -> bool:
        """True when every quantizer this recipe enables is enabled (so calibrated) in ``other``."""
        return self.gemm_outputs <= other.gemm_outputs and self.residuals <= other.residuals


RECIPES: dict[str, Recipe] = {
    "1": Recipe("1", frozenset(LINEAR_KINDS), frozenset(), "reference int8-mode 1: all GEMM outputs quantized"),
    "2": Recipe("2", frozenset({"qkv", "proj", "fc1"}), frozenset(), "reference int8-mode 2: fc2 and PatchMerging GEMM outputs in higher precision"),
    "trt": Recipe("trt", frozenset(), frozenset(), "TensorRT placement: GEMM inputs, attention matmuls; no GEMM outputs, no residual adds"),
    "trt-residual": Recipe("trt-residual", frozenset(), frozenset({"mlp_residual_quantizer"}),
                           "the trt placement before 0.2, with the MLP residual add's skip operand quantized (older checkpoints)"),
}
INT8_MODES = tuple(RECIPES)  # what --int8-mode offers
REFERENCE_MODES = ("1", "2")  # the reference toolkit's own


def get_recipe(name: str | int) -> Recipe:
    key = str(name)
    if key not in RECIPES:
        raise SwinTrtError(f"unknown --int8-mode {name!r}; choose {', '.join(INT8_MODES[:-1])} or {INT8_MODES[-1]}")
    return RECIPES[key]
