"""How many Q/DQ each recipe puts where, from the architecture: what `swin-trt inspect` checks
an exported graph against."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from swin_trt.quantization.recipes import Recipe, get_recipe

LINEARS_PER_BLOCK = 4  # qkv, proj, fc1, fc2

# the DequantizeLinear role (as swin_trt.onnx.graph.classify_dequantize counts them) of each quantizer attribute
ROLES = {
    "weight_quantizer": "gemm_weight",
    "input_quantizer": "gemm_input",
    "output_quantizer": "gemm_output",
    "q_quantizer": "attention_matmul",
    "k_quantizer": "attention_matmul",
    "v_quantizer": "attention_matmul",
    "softmax_quantizer": "attention_matmul",
    "attn_residual_quantizer": "residual_add",
    "mlp_residual_quantizer": "residual_add",
}


def role_counts(quantizers: Iterable[str]) -> Counter[str]:
    """DequantizeLinear roles of quantizers named by their qualified names."""
    return Counter(ROLES[name.rsplit(".", 1)[-1]] for name in quantizers)


def expected_placement(sidecar: dict[str, Any]) -> dict[str, int]:
    """Expected DequantizeLinear counts by consumer for the graph a sidecar describes: the recipe's,
    less the quantizers a mixed-precision fallback keeps in higher precision (``disabled``, which
    lists only quantizers the recipe enables)."""
    mode = sidecar.get("int8_mode")
    if mode is None:
        return {"q_nodes": 0, "dq_nodes": 0}
    expected = _placement(get_recipe(mode), sidecar)
    if mode == "trt" and sidecar.get("quantizers_enabled") not in (None, expected["dq_nodes"]):
        # a sidecar written before 0.2, when trt also quantized the MLP residual (now trt-residual): its own count says so
        legacy = _placement(get_recipe("trt-residual"), sidecar)
        expected = legacy if sidecar["quantizers_enabled"] == legacy["dq_nodes"] else expected
    return expected


def _placement(recipe: Recipe, sidecar: dict[str, Any]) -> dict[str, int]:
    blocks, merges = sidecar["blocks"], sidecar["merges"]
    linears = LINEARS_PER_BLOCK * blocks + merges
    expected = {
        "gemm_weight": linears,
        "gemm_input": linears,
        "attention_matmul": 4 * blocks,
        "gemm_output": sum(blocks if kind != "reduction" else merges for kind in recipe.gemm_outputs),
        "residual_add": blocks * len(recipe.residuals),
        "other": 0,
    }
    for role, count in role_counts(sidecar.get("disabled") or ()).items():
        expected[role] -= count
    expected["dq_nodes"] = sum(expected.values())
    expected["q_nodes"] = expected["dq_nodes"] - (expected["gemm_weight"] if sidecar.get("weights") in ("int8", "fp8") else 0)
    return expected
