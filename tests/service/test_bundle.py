"""The service refuses a bundle whose manifest and graph disagree, naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from service.bundle import BundleError, sha256_of
from service.graph_check import load_bundle


@pytest.fixture
def bundle(repository: Path, tmp_path: Path) -> Path:
    target = tmp_path / "italy" / "1"
    shutil.copytree(next((repository / "italy").iterdir()), target)
    return target


def _edit_manifest(bundle: Path, edit) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    edit(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_good_bundle_loads(bundle: Path) -> None:
    manifest, graph = load_bundle(bundle)
    assert manifest.name == "italy" and graph


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["gru"].update(linear_before_reset=0), "gru.linear_before_reset"),
    (lambda m: m["gru"].update(hidden_size=32), "gru.hidden_size"),
    (lambda m: m["gru"].update(num_layers=2), "gru.num_layers"),
    # the manifest agrees with itself (3 features), not with the graph
    (lambda m: (m["onnx"]["inputs"][0].update(shape=["batch", "time", 3]),
                m["inputs"].update(features=["a", "b", "c"])), r"onnx.inputs\[0\].shape"),
    (lambda m: m["onnx"]["inputs"][0].update(shape=["batch", "time", 3]), "inputs.features names 1 but"),
    (lambda m: m["onnx"]["outputs"][0].update(name="probs"), "onnx.outputs names"),
    (lambda m: m["onnx"].update(opset=13), "onnx.opset"),
    (lambda m: m.update(version=7), "name/version"),
    (lambda m: m.update(schema_version=99), "schema_version"),
    (lambda m: m.update(colour="red"), "colour"),
    (lambda m: m["onnx"].update(sha256="0" * 64), "onnx.sha256"),
])
def test_disagreement_is_refused_naming_the_field(bundle: Path, edit, field: str) -> None:
    _edit_manifest(bundle, edit)
    with pytest.raises(BundleError, match=field):
        load_bundle(bundle)


def test_graph_with_other_gru_variant_is_refused(bundle: Path) -> None:
    model = onnx.load(bundle / "model.onnx")
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.name == "linear_before_reset":
                attr.i = 0
    onnx.save(model, bundle / "model.onnx")
    _edit_manifest(bundle, lambda m: m["onnx"].update(sha256=sha256_of(bundle / "model.onnx")))
    with pytest.raises(BundleError, match="gru.linear_before_reset says 1 but GRU node"):
        load_bundle(bundle)


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:100]), "onnx.sha256"),
    (lambda b: (b / "manifest.json").write_text("{not json"), "invalid manifest"),
    (lambda b: (b / "manifest.json").unlink(), "cannot read the manifest"),
])
def test_corrupt_files_are_refused(bundle: Path, damage, message: str) -> None:
    damage(bundle)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
