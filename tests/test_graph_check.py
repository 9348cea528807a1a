"""The parity gate's second pass (issue 15): the engine's bytes bound to its sidecar, the bound
family read from the verified graph, the complete graph check against a fresh export, sidecars
and --json paths that cannot collide, --localize on a TensorRT-target graph, and corrupt inputs.

One calibrated swin_micro (trt recipe, 2 calibration batches) exported twice (the default FP32
graph and the --target tensorrt graph); each attack edits a copy, rewrites its sidecar for the new
bytes (a consistent chain) and rebuilds an onnxruntime engine, so only the check under test can
catch it. Every bench here runs on one batch (64 images)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from swin_trt.errors import SwinTrtError
from swin_trt.io import read_sidecar, sidecar_path, write_sidecar
from swin_trt.parity.edits import EDITS
from swin_trt.parity.localize import perturb_scale, save_edited
from swin_trt.pipelines.deploy import bench_engine
from swin_trt.runtimes.onnxruntime import build


@pytest.fixture(scope="module")
def chain(micro_trt, digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("graph_check")
    engine = build(micro_trt.graph["onnx"], out / "m.ort-exact.onnx", "exact")
    return {"checkpoint": micro_trt.checkpoint, "graph": Path(micro_trt.graph["onnx"]), "engine": Path(engine["engine"]), "digits": digits_dir}


@pytest.fixture(scope="module")
def trt_graph(micro_trt):
    return Path(micro_trt.trt_graph["onnx"])


def _bench(chain, engine, **options):
    return bench_engine(chain["checkpoint"], engine, chain["digits"], workers=0, max_batches=1, **options)


def _edited(chain, tmp_path, edit) -> Path:
    """A copy of the graph with ``edit(model)`` applied, its sidecar rewritten for the new bytes,
    and an onnxruntime engine built from it: the provenance chain is consistent."""
    model = onnx.load(chain["graph"])
    edit(model)
    graph = save_edited(model, chain["graph"], tmp_path / "edited.onnx")
    return Path(build(graph, tmp_path / "edited.ort-exact.onnx", "exact")["engine"])


def test_genuine_chain_passes_the_graph_check(chain):
    outcome = _bench(chain, chain["engine"])
    assert outcome.provenance.verified and outcome.graph_mismatches == [] and outcome.precision == "fp32"
    assert "max_graph_mismatches" not in outcome.verdict.failed


@pytest.mark.parametrize("what", sorted(EDITS))
def test_one_edited_tensor_fails_the_gate_naming_it(chain, tmp_path, what):
    edit, named = EDITS[what]
    outcome = _bench(chain, _edited(chain, tmp_path, edit))
    assert outcome.provenance.verified  # the chain is consistent: only the graph check can tell
    assert "max_graph_mismatches" in outcome.verdict.failed
    assert named in outcome.graph_mismatches[0], outcome.graph_mismatches


def test_graph_differences_names_the_node_where_the_structure_changes(chain):
    from swin_trt.parity.conformance import graph_differences

    genuine = onnx.load(chain["graph"])
    assert graph_differences(genuine, onnx.load(chain["graph"])) == []
    changed = onnx.load(chain["graph"])
    index, node = next((i, n) for i, n in enumerate(changed.graph.node) if n.op_type == "Softmax")
    node.op_type = "Relu"
    del node.attribute[:]
    found = graph_differences(changed, genuine)
    assert found == [f"node {index}: Relu {node.name!r} in the graph, Softmax {node.name!r} in the reference export"]


def test_graph_differences_ignore_the_exporters_names_but_not_the_wiring(chain):
    """Two exports of one model can number their nodes differently (CI saw ``Transpose_769``
    against ``Transpose_770``): renaming every node and intermediate tensor is no difference
    (except the Q/DQ nodes named after their quantizer: localize reads those names), feeding a
    node from another earlier tensor is."""
    from swin_trt.parity.conformance import graph_differences

    genuine = onnx.load(chain["graph"])
    renamed = onnx.load(chain["graph"])
    kept = {v.name for v in renamed.graph.input} | {v.name for v in renamed.graph.output} | {i.name for i in renamed.graph.initializer}
    new_name = {}
    for number, node in enumerate(renamed.graph.node):
        if not node.name.endswith(f"_quantizer.{node.op_type}"):
            node.name = f"renamed_{number}"
        for slot, tensor in enumerate(node.output):
            if tensor not in kept:
                new_name[tensor] = f"renamed_{number}_{slot}"
                node.output[slot] = new_name[tensor]
        for slot, tensor in enumerate(node.input):
            node.input[slot] = new_name.get(tensor, tensor)
    assert graph_differences(renamed, genuine) == []

    rewired = onnx.load(chain["graph"])
    index, node = next((i, n) for i, n in enumerate(rewired.graph.node) if n.op_type == "Add" and i > 10)
    earlier = next(n.output[0] for n in rewired.graph.node[index - 5:index] if n.output[0] not in node.input)
    slot = next(s for s, tensor in enumerate(node.input) if tensor not in kept)
    node.input[slot] = earlier
    found = graph_differences(rewired, genuine)
    assert len(found) == 1 and found[0].startswith(f"node {index}: Add") and f"reads {earlier!r}" in found[0], found


@pytest.mark.slow  # a second process re-exports (about 20 s): make test-slow
def test_export_is_deterministic_across_processes(chain, tmp_path):
    """The graph check compares with a fresh export: another process (another hash seed) writes the same bytes."""
    again = tmp_path / "again.onnx"
    environment = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "swin_trt", "export", "--resume", str(chain["checkpoint"]), "--output", str(again)], check=True,
                   env=environment, capture_output=True)
    assert again.read_bytes() == chain["graph"].read_bytes()


def test_another_engines_bytes_under_a_genuine_sidecar_are_refused(chain, tmp_path, run_cli):
    engine = tmp_path / "m.ort-exact.onnx"
    shutil.copy(chain["engine"], engine)
    shutil.copy(sidecar_path(chain["engine"]), sidecar_path(engine))
    other = build(chain["graph"], tmp_path / "other.ort-fast.onnx", "fast")["engine"]
    engine.write_bytes(Path(other).read_bytes())
    code, out, err = run_cli("bench", "--reference", chain["checkpoint"], "--engine", engine, "--data-path", chain["digits"], "--workers", "0",
                             "--allow-foreign-engine", "--json", tmp_path / "bench.json")
    assert code == 2 and err.count("\n") == 1 and "is not the engine its sidecar m.ort-exact.onnx.json describes" in err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize("which", ["engine", "graph"])
def test_an_fp16_claim_on_an_fp32_graph_is_refused(chain, tmp_path, which):
    """The family comes from the graph's own tensor types; a sidecar saying otherwise is refused
    (it would loosen the FP32 bounds to the FP16 ones)."""
    graph, engine = tmp_path / "m.onnx", tmp_path / "m.ort-exact.onnx"
    for source, target in ((chain["graph"], graph), (chain["engine"], engine)):
        shutil.copy(source, target)
    write_sidecar(graph, {**read_sidecar(chain["graph"]), "precision": "fp16" if which == "graph" else "fp32"})
    write_sidecar(engine, {**read_sidecar(chain["engine"]), "source_onnx": str(graph.resolve()), "precision": "fp16" if which == "engine" else "fp32"})
    with pytest.raises(SwinTrtError, match="says precision 'fp16', but the graph .* computes in fp32"):
        _bench(chain, engine)


def test_a_graph_and_an_engine_with_the_same_stem_share_a_folder(chain, tmp_path, run_cli):
    graph = tmp_path / "base.onnx"
    shutil.copy(chain["graph"], graph)
    write_sidecar(graph, {**read_sidecar(chain["graph"]), "onnx": str(graph)})
    code, _, err = run_cli("build", "--onnx", graph, "--ort-mode", "exact", "--output", tmp_path / "base.ort-exact")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.onnx", "base.onnx.json", "base.ort-exact", "base.ort-exact.json"]
    outcome = _bench(chain, tmp_path / "base.ort-exact")  # not .ort: onnxruntime reads that as its own format
    assert outcome.provenance.verified and outcome.graph_mismatches == []
    code, _, err = run_cli("build", "--onnx", graph, "--output", tmp_path / "base")  # base.json: the old-style sidecar name of base.onnx
    assert code == 2 and "would be read as the old-style sidecar of" in err and not (tmp_path / "base").exists()


@pytest.mark.parametrize("case", ["json is the engine's sidecar", "json is the graph", "json is the graph's sidecar", "output is a sidecar",
                                  "output is the graph", "output's sidecar is another file"])
def test_build_refuses_outputs_that_collide_with_artifacts(chain, tmp_path, run_cli, case):
    graph = chain["graph"]
    output, json_path = tmp_path / "e.onnx", None
    if case == "json is the engine's sidecar":
        json_path = tmp_path / "e.onnx.json"
    elif case == "json is the graph":
        json_path = graph
    elif case == "json is the graph's sidecar":
        json_path = sidecar_path(graph)
    elif case == "output is a sidecar":
        output = sidecar_path(graph)
    elif case == "output is the graph":
        output = graph
    else:
        (tmp_path / "e.onnx.json").write_text("{}")
    before = {path: path.read_bytes() for path in (graph, sidecar_path(graph))}
    code, _, err = run_cli("build", "--onnx", graph, "--output", output, *(["--json", json_path] if json_path else []))
    assert code == 2 and err.count("\n") == 1, err
    assert {path: path.read_bytes() for path in before} == before and not (tmp_path / "e.onnx").exists()


@pytest.mark.parametrize("content", [b"", b"not a graph\n", b"\x08\x07\x12\x03abc\xff\xff"])
def test_corrupt_or_non_onnx_inputs_are_one_line(chain, tmp_path, run_cli, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    results = [run_cli("build", "--onnx", bad, "--output", tmp_path / "e.onnx"), run_cli("inspect", bad),
               run_cli("bench", "--reference", chain["checkpoint"], "--engine", chain["engine"], "--onnx", bad, "--data-path", chain["digits"])]
    for code, _, err in results:
        assert code == 2 and err.count("\n") == 1 and "not an ONNX model" in err and "Traceback" not in err, err


def test_localize_on_a_tensorrt_target_graph(chain, trt_graph, tmp_path):
    """The hoisted kᵀ is compared with the reference's k after undoing the recorded transpose: a
    genuine graph blames nothing, one k scale doubled is named first."""
    details = read_sidecar(trt_graph)
    assert details["hoisted_transposes"] and all(perm == [0, 1, 3, 2] for perm in details["hoisted_transposes"].values())
    genuine = build(trt_graph, tmp_path / "trt.ort-exact.onnx", "exact")["engine"]
    outcome = _bench(chain, genuine, localize_images=8)
    assert outcome.precision == "fp16" and outcome.localization.first_outside is None, outcome.localization.layers
    k = "layers.1.blocks.0.attn.k_quantizer"
    broken = perturb_scale(trt_graph, tmp_path / "broken.onnx", k, 2.0)
    outcome = _bench(chain, build(broken, tmp_path / "broken.ort-exact.onnx", "exact")["engine"], localize_images=8)
    assert outcome.localization.first_outside.name == k
    assert outcome.graph_mismatches and k in outcome.graph_mismatches[0]


def test_localize_matches_shapes_explicitly():
    from swin_trt.parity.localize import like_the_reference

    k = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)
    assert np.array_equal(like_the_reference("k", k.transpose(0, 2, 1), k.shape, [0, 2, 1]), k)
    with pytest.raises(SwinTrtError, match="not the same tensor layout"):
        like_the_reference("k", k.reshape(2, 256), k.shape, None)  # same values, other layout: never reshaped
