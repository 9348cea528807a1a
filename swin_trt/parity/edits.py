"""One-element edits of an exported graph, the attacks the gate's graph check must name.

Each edit changes one value of a tensor the numeric bounds can miss (a bias element, a LayerNorm
gamma, a Q scale, a zero point, a position-bias entry of swin_micro's graph); the graph check
(:mod:`swin_trt.parity.conformance`) must fail an engine rebuilt from the edited graph and name the
tensor first. Kept in the package because two callers show it: ``tests/test_graph_check.py`` and
``benchmarks/gate_attacks.py`` (the same edits through the CLI, with the exit statuses).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from swin_trt.lazy import lazy_import

numpy_helper = lazy_import("onnx.numpy_helper")


def _initializer(model, name: str):
    return next(init for init in model.graph.initializer if init.name == name)


def change_element(model, name: str, index: int, change: Callable[[np.generic], np.generic]) -> None:
    """Replace element ``index`` (flat) of initializer ``name`` by ``change`` of it, in place."""
    init = _initializer(model, name)
    values = numpy_helper.to_array(init).copy()
    values.reshape(-1)[index] = change(values.reshape(-1)[index])
    init.CopyFrom(numpy_helper.from_array(values, name))


def own_constant(model, node_name: str, slot: int, value: np.ndarray) -> None:
    """Give one node its own constant at input ``slot``: export shares equal constants between
    nodes, so editing the shared initializer would change every node that reads it."""
    node = next(n for n in model.graph.node if n.name == node_name)
    model.graph.initializer.append(numpy_helper.from_array(value, f"{node_name}.edited_{slot}"))
    node.input[slot] = f"{node_name}.edited_{slot}"


def node_scale(model, node_name: str) -> np.ndarray:
    """The scale (input 1) of the QuantizeLinear / DequantizeLinear ``node_name``."""
    node = next(n for n in model.graph.node if n.name == node_name)
    return numpy_helper.to_array(_initializer(model, node.input[1]))


QUANTIZER = "layers.1.blocks.0.mlp.fc1.input_quantizer"
EDITS: dict[str, tuple[Callable[[object], None], str]] = {  # what is edited -> (the edit, what the first graph-check line must name)
    "bias element": (lambda m: change_element(m, "layers.1.blocks.0.mlp.fc1.bias", 3, lambda v: v + np.float32(1e-3)), "layers.1.blocks.0.mlp.fc1.bias"),
    "LayerNorm gamma": (lambda m: change_element(m, "layers.0.blocks.1.norm2.weight", 5, lambda v: v * np.float32(1.01)),
                        "layers.0.blocks.1.norm2.weight (gamma of LayerNormalization"),
    "Q scale": (lambda m: own_constant(m, f"{QUANTIZER}.QuantizeLinear", 1, node_scale(m, f"{QUANTIZER}.QuantizeLinear") * np.float32(1.001)),
                f"(scale of QuantizeLinear '{QUANTIZER}.QuantizeLinear')"),
    "zero point": (lambda m: own_constant(m, f"{QUANTIZER}.DequantizeLinear", 2, np.array(1, dtype=np.int8)),
                   f"(zero point of DequantizeLinear '{QUANTIZER}.DequantizeLinear')"),
    "position-bias entry": (lambda m: change_element(m, "unsqueeze", 7, lambda v: v + np.float32(0.01)), "unsqueeze (input B of Add"),
}
