"""Every TensorRT name that ``swin_trt/`` and ``benchmarks/`` use exists, with the arguments used,
in the genuine bindings of TensorRT 10.13 and of the newest 11.x.

The names come from the code (``tests/tensorrt_uses.py``: an AST walk over attribute chains
rooted at the ``tensorrt`` module and at the objects it returns); the bindings are TensorRT's own
pybind11 module imported over stand-in libraries in a child process (``tests/tensorrt_bindings.py``).
Skipped, with the reason, only where the wheels or a C compiler cannot be had, and never under CI
(``CI`` set), where pip can fetch them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import tensorrt_bindings
import tensorrt_uses

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("10.13.3.9.post1", "11.4.0.106")  # the NGC 25.10 container's TensorRT, and the newest on the index


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"the TensorRT conformance test must run under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module", params=VERSIONS)
def bindings(request, tmp_path_factory):
    try:
        return tensorrt_bindings.prepare(request.param, tmp_path_factory.mktemp(f"trt{request.param.split('.')[0]}"))
    except tensorrt_bindings.Unavailable as reason:
        _unavailable(str(reason))


def _as_json(uses: list[tensorrt_uses.Use]) -> list[dict]:
    return [{"steps": [list(step) for step in use.chain.steps], "guarded": use.chain.guarded, "store": use.store, "where": use.where} for use in uses]


def conformance(bindings: dict, root: Path = REPO) -> tuple[dict, dict[str, set[str]], dict[str, dict]]:
    """(the child's report, {name: where used} of the names that fail, {name: entry} of every name checked)."""
    report = tensorrt_bindings.check(bindings, _as_json(tensorrt_uses.collect(root)), REPO)
    failures: dict[str, set[str]] = {}
    checked: dict[str, dict] = {}
    for chain in report["chains"]:
        for entry in chain["entries"]:
            checked.setdefault(entry["name"], entry)
            if entry["status"] in ("missing", "arguments", "read-only") and not chain["guarded"]:
                failures.setdefault(f"{entry['name']}: {entry['status']} {entry['detail']}".strip(), set()).add(chain["where"])
    return report, failures, checked


@pytest.fixture(scope="module")
def checked(bindings):
    """``conformance`` of the repository's code with this version (one child process)."""
    return conformance(bindings)


def test_stand_ins_are_derived_from_the_binary(bindings):
    """The stand-in libraries are the binary's own TensorRT needs: the three libraries of its major
    version and the C entry points, nothing of Python or libc."""
    major = bindings["version"].split(".")[0]
    assert sorted(bindings["libraries"]) == sorted(f"{name}.so.{major}" for name in ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser"))
    assert "createInferRuntime_INTERNAL" in bindings["symbols"] and "createNvOnnxParser_INTERNAL" in bindings["symbols"]
    assert not [s for s in bindings["symbols"] if s.startswith(("Py", "_Py", "dl"))]


def test_every_tensorrt_name_the_code_uses_exists(checked):
    report, failures, checked = checked
    ok = sorted(name for name, entry in checked.items() if entry["status"] == "ok")
    print(f"\nTensorRT {report['version']}: {len(checked)} names checked, {len(ok)} present, {len(failures)} failing")
    for name in sorted(checked):
        print(f"  {checked[name]['status']:<10} {name}")
    assert len(ok) >= 30  # the collector still finds the backend's uses (runtime, engine, context, inspector, enums)
    assert not failures, "names the code uses that TensorRT {} lacks:\n{}".format(
        report["version"], "\n".join(f"  {name} (at {', '.join(sorted(where))})" for name, where in sorted(failures.items())))


def test_version_branches_on_the_genuine_module(checked):
    """The code's version-dependent lookups, run on the real module: strongly typed networks on
    10.13 and 11 (the flag exists in both), no EXPLICIT_BATCH (implied since 10, removed in 11);
    every engine tensor type the runner maps to torch is a ``DataType`` of this version."""
    report, _, _ = checked
    assert report["require_tensorrt"]
    assert report["network_flags"] == {"strongly_typed": True, "explicit_batch": False}
    assert set(report["torch_dtypes"]) <= set(report["data_types"]), set(report["torch_dtypes"]) - set(report["data_types"])
    guarded = {entry["name"]: entry["status"] for chain in report["chains"] if chain["guarded"] for entry in chain["entries"]}
    print(f"\nTensorRT {report['version']}: guarded lookups {guarded}")
    assert guarded["NetworkDefinitionCreationFlag.STRONGLY_TYPED"] == "ok"


def test_a_misspelt_name_fails(bindings, tmp_path):
    """A scratch copy of the backend with a misspelt method, a misspelt enum member and one
    argument too many: each is named, with where it is used."""
    shutil.copytree(REPO / "swin_trt", tmp_path / "swin_trt", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "benchmarks").mkdir()
    backend = tmp_path / "swin_trt" / "runtimes" / "tensorrt.py"
    source = backend.read_text()
    breaks = {".set_tensor_address(": ".set_tensor_adress(", "TensorIOMode.INPUT": "TensorIOMode.INPUTS",
              "get_tensor_profile_shape(self.input_name, 0)": "get_tensor_profile_shape(self.input_name, 0, 1)"}
    for right, wrong in breaks.items():
        assert right in source
        source = source.replace(right, wrong, 1)
    backend.write_text(source)
    _, failures, _ = conformance(bindings, tmp_path)
    print(f"\nTensorRT {bindings['version']}, broken copy: {sorted(failures)}")
    assert {name.split(":")[0] for name in failures} == {"IExecutionContext.set_tensor_adress", "TensorIOMode.INPUTS",
                                                         "ICudaEngine.get_tensor_profile_shape(_, _, _)"}, failures
    assert all(where and all(w.startswith("swin_trt/runtimes/tensorrt.py:") for w in where) for where in failures.values())
