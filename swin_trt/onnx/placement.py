"""How many Q/DQ each recipe puts where, from the architecture: what `swin-trt inspect` checks
an exported graph against."""

from __future__ import annotations

from typing import Any

LINEARS_PER_BLOCK = 4  # qkv, proj, fc1, fc2


def expected_placement(sidecar: dict[str, Any]) -> dict[str, int]:
    """Expected DequantizeLinear counts by consumer for the graph a sidecar describes."""
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
    expected["dq_nodes"] = sum(expected.values())
    expected["q_nodes"] = expected["dq_nodes"] - (linears if sidecar.get("weights") == "int8" else 0)
    return expected
