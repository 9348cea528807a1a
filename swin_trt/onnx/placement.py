"""How many Q/DQ each recipe puts where, from the architecture: what `swin-trt inspect` checks
an exported graph against."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

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
    blocks, merges = sidecar["blocks"], sidecar["merges"]
    mode = sidecar.get("int8_mode")
    if mode is None:
        return {"q_nodes": 0, "dq_nodes": 0}
    linears = LINEARS_PER_BLOCK * blocks + merges
    gemm_outputs = {"1": linears, "2": 3 * blocks, "trt": 0}[mode]
    expected = {
        "gemm_weight": linears,
        "gemm_input": linears,
        "attention_matmul": 4 * blocks,
        "gemm_output": gemm_outputs,
        "residual_add": blocks if mode == "trt" else 0,  # the MLP residual of each block
        "other": 0,
    }
    for role, count in role_counts(sidecar.get("disabled") or ()).items():
        expected[role] -= count
    expected["dq_nodes"] = sum(expected.values())
    expected["q_nodes"] = expected["dq_nodes"] - (expected["gemm_weight"] if sidecar.get("weights") in ("int8", "fp8") else 0)
    return expected
