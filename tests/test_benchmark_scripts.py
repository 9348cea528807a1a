"""Every benchmark script imports: a script is run by hand, rarely, and a name it imports can vanish
from the package without any other test noticing (sensitivity_speed.py imported a function removed
months earlier, so its results file could not be regenerated)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the scripts import their siblings (timing, machine) as top-level modules
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)  # runs the imports and definitions; main() stays behind __name__ == "__main__"
    if '__name__ == "__main__"' in (BENCHMARKS / script).read_text():  # a script, not a helper module (timing, machine)
        assert callable(getattr(module, "main", None)), f"{script} runs as a script but has no main()"
