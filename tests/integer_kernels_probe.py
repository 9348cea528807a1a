"""Whether onnxruntime's integer GEMM (MLAS) sums 8-bit products exactly on the CPU it runs on: the
facts SATURATION_FREE_BITS, choose_mode and unsigned_operands rest on.

MLAS picks its kernels from CPUID, and no session option or environment variable selects another
set, so this module is also run as a script under an emulator that presents a CPU without VNNI
(``qemu-x86_64 -cpu Haswell``, tests/test_parity.py): that is how a VNNI machine checks the AVX2
kernels. It imports only numpy, onnx and onnxruntime, which start in seconds under emulation.

    python tests/integer_kernels_probe.py ROWS   # prints {"7": bool, "8": bool, "8 unsigned": bool}
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

DEPTH, COLUMNS = 64, 16


def matmul_integer(unsigned: np.ndarray, right: np.ndarray, right_zero_point: int = 0) -> np.ndarray:
    """onnxruntime's own MatMulInteger kernel (MLAS) for u8 x ``right`` (s8 or u8) -> s32, the kernels its fast mode fuses
    Q/DQ matmuls into: u8s8 for int8 operands, u8u8 for the uint8 ones of ``unsigned_int8_operands``."""
    right_type = TensorProto.INT8 if right.dtype == np.int8 else TensorProto.UINT8
    zero_point = numpy_helper.from_array(np.array(right_zero_point, dtype=right.dtype), "zero_point")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B", "", "zero_point"], ["Y"])], "matmul_integer",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, list(unsigned.shape)),
                               helper.make_tensor_value_info("B", right_type, list(right.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, None)], initializer=[zero_point])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"A": unsigned, "B": right})[0]


def exact_at(bits: int, rows: int, stored_unsigned: bool = False) -> bool:
    """The worst case of u8 = 255 against a signed operand at either extreme of ``bits``: exact int32 sums, or not.
    ``stored_unsigned``: the same values as uint8 with zero point 128, as unsigned_int8_operands stores them."""
    unsigned = np.full((rows, DEPTH), 255, dtype=np.uint8)
    for extreme in (-(1 << (bits - 1)), (1 << (bits - 1)) - 1):
        signed = np.full((DEPTH, COLUMNS), extreme, dtype=np.int64)
        right = (signed + 128).astype(np.uint8) if stored_unsigned else signed.astype(np.int8)
        got = matmul_integer(unsigned, right, 128 if stored_unsigned else 0)
        if not np.array_equal(got, unsigned.astype(np.int64) @ signed):
            return False
    return True


def probe(rows: int) -> dict[str, bool]:
    return {"7": exact_at(7, rows), "8": exact_at(8, rows), "8 unsigned": exact_at(8, rows, stored_unsigned=True)}


if __name__ == "__main__":
    print(json.dumps(probe(int(sys.argv[1]))))
