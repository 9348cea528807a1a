"""How the exported graph moves Swin's tokens between the image grid and the attention windows.

timm writes a shifted block's attention as ``roll`` (two Slice/Concat pairs per direction once
exported), ``window_partition`` (Reshape, a 6-D Transpose, Reshape) and the same in reverse: about
ten data-movement nodes per block, each a full pass over the activations, and onnxruntime fuses
none of them (Transpose alone was 13 % of the fast engine's operator time on Swin-T). The
cyclic shift and the partition are one permutation of the H x W tokens, fixed by the block's
geometry, so the ``gather`` layout exports each direction as a single Gather on the token axis
with a constant index. It only moves values, so every engine computes the same bits as with
timm's layout (tests/test_layout.py runs both); the tokens a window sees, their order and the
attention mask are unchanged.

The layout is an export setting (recorded in the sidecar, see
:class:`swin_trt.pipelines.export.ExportSettings`): the PyTorch model keeps timm's forward, which
training and calibration use, and the gate re-exports a graph in the layout it was made with.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from swin_trt.lazy import lazy_import

torch = lazy_import("torch")
swin = lazy_import("timm.models.swin_transformer")  # the CLI reads LAYOUTS without loading torch

LAYOUTS = ("gather", "timm")  # the default first
DEFAULT_LAYOUT = LAYOUTS[0]


def window_token_order(height: int, width: int, window: tuple[int, int], shift: tuple[int, int]) -> Any:
    """The grid index (row * width + column) of each token in the order a block's attention reads
    them: window by window after the cyclic shift by ``-shift``. Made by running timm's own roll
    and ``window_partition`` on a grid of indices, so it is that data movement by construction."""
    grid = torch.arange(height * width).reshape(1, height, width, 1)
    if any(shift):
        grid = torch.roll(grid, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    return swin.window_partition(grid, window).reshape(-1)


class _GatheredWindows:
    """``SwinTransformerBlock._attn`` with the shift and the partition (and their reverse) as one
    gather each; mixed into the block's own class while exporting (:func:`layout`)."""

    def _attn(self, x: Any) -> Any:
        batch, height, width, channels = x.shape
        windows = x.reshape(batch, height * width, channels).index_select(1, self.window_order)
        attended = self.attn(windows.reshape(-1, self.window_area, channels), mask=self.attn_mask)
        return attended.reshape(batch, height * width, channels).index_select(1, self.grid_order).reshape(batch, height, width, channels)


@functools.cache
def _gathered_class(block_class: type) -> type:
    return type(f"Gathered{block_class.__name__}", (_GatheredWindows, block_class), {})


def _gatherable(block: Any) -> bool:
    """Without padding and with a fixed mask only: timm pads a resolution that is not a multiple of
    the window, and a dynamic mask is computed per input; those blocks keep timm's layout."""
    height, width = swin.to_2tuple(block.input_resolution)
    return height % block.window_size[0] == 0 and width % block.window_size[1] == 0 and not getattr(block, "dynamic_mask", False)


@contextmanager
def layout(model: Any, name: str) -> Iterator[None]:
    """Export ``model``'s blocks in layout ``name`` (one of :data:`LAYOUTS`) inside the block; the
    model is back to timm's forward, with no added buffers, when it ends."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(LAYOUTS)}")
    blocks = [b for b in model.modules() if isinstance(b, swin.SwinTransformerBlock) and _gatherable(b)] if name == "gather" else []
    for block in blocks:
        order = window_token_order(*swin.to_2tuple(block.input_resolution), block.window_size, block.shift_size)
        block.register_buffer("window_order", order, persistent=False)
        block.register_buffer("grid_order", torch.argsort(order), persistent=False)
        block.__class__ = _gathered_class(type(block))
    try:
        yield
    finally:
        for block in blocks:
            block.__class__ = block.__class__.__bases__[1]
            del block.window_order, block.grid_order
