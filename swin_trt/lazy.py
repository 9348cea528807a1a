"""Modules that load on first use, declared once at the top of a module.

``swin-trt --help`` and one-line errors must not wait for torch, onnx or onnxruntime (seconds
each). A module that needs one writes ``torch = lazy_import("torch")`` at the top, as
Polygraphy's ``mod.lazy_import`` does, and uses ``torch.`` as usual; the import happens at the
first attribute access. A small proxy rather than ``importlib.util.LazyLoader``: the loader
replaces ``sys.modules`` entries before they run, which breaks packages with C extensions that
import their own submodules during initialisation (torch does).
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for the module ``name`` and imports it when an attribute is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = None

    def _load(self) -> types.ModuleType:
        target = self.__dict__["_lazy_target"]
        if target is None:
            target = importlib.import_module(self.__name__)
            self.__dict__["_lazy_target"] = target
        return target

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._load(), attribute)

    def __dir__(self) -> list[str]:
        return dir(self._load())


def lazy_import(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first attribute access."""
    return LazyModule(name)
