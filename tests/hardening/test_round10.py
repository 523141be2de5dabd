"""Hardening round 10: the commands around train and serve (gru import, bundles made by hand, gru predict,
gru tune, gru pull) with what a user or a colleague's files bring. Each test tries a defect the way it
was found; docs/results/hardening.md (Round 10) lists them and what held."""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from export.foreign import Unsupported
from export.importer import ImportRequest, import_graph
from gru_cli import main as gru
from tests.e2e.test_mlflow import mlflow_server  # noqa: F401 - the real MLflow server, as a fixture
from tests.export.foreign_graphs import classifier
from tests.helpers import Server, free_port

LABELS = ["a", "b", "c"]


def save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / name)
    return folder / name


def imported(repository: Path, name: str, model: onnx.ModelProto | None = None) -> Path:
    """A bundle `gru import` wrote from a graph built with onnx.helper (2 features, 3 classes)."""
    source = save(model or classifier(), repository.parent / "graphs" / name)
    return import_graph(source, repository, ImportRequest(name=name, task="classification",
                                                          labels=LABELS)).bundle_dir


def with_initializer(model: onnx.ModelProto, name: str, change) -> onnx.ModelProto:
    model = copy.deepcopy(model)
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name == name:
            values = numpy_helper.to_array(tensor).copy()
            change(values)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(values, name))
    return model


# -- gru import ---------------------------------------------------------------------------------------------

def test_a_graph_whose_answers_are_nan_is_refused_naming_the_weight(tmp_path: Path) -> None:
    # before: an infinite bias made every answer NaN; the parity check's max() read NaN as no difference,
    # so the bundle was written ("max scaled diff 0.0e+00") and the server refused it at load
    model = with_initializer(classifier(), "dense_b", lambda b: b.__setitem__(0, np.inf))
    with pytest.raises(Unsupported, match=r"answers NaN or infinity .*initializer\(s\) \['dense_b'\]"):
        imported(tmp_path / "models", "infinite", model)
    assert not (tmp_path / "models").exists()


def gru_node(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "GRU")


def test_a_gru_node_with_layout_1_or_no_hidden_size_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    # before: layout=1 got onnxruntime's "Batchwise recurrent operations (layout == 1) are not supported"
    # (and its own log line), hidden_size 0 a pydantic dump, no hidden_size a KeyError traceback
    batch_major = classifier()
    gru_node(batch_major).attribute.append(helper.make_attribute("layout", 1))
    with pytest.raises(Unsupported, match=r"GRU node 'gru0' has layout=1 .*re-export it time-major"):
        imported(tmp_path / "models", "batch_major", batch_major)
    unsized = classifier()
    node = gru_node(unsized)
    kept = [a for a in node.attribute if a.name != "hidden_size"]
    del node.attribute[:]
    node.attribute.extend(kept)
    with pytest.raises(Unsupported, match=r"GRU node 'gru0' has hidden_size None; gru import needs"):
        imported(tmp_path / "models", "unsized", unsized)


@pytest.mark.parametrize(("flags", "said"), [
    ({"length": -5}, "--length -5: give 1 or more"),  # was numpy's "negative dimensions are not allowed"
    ({"max_length": -1}, "--max-length -1: give 1 or more"),  # a pydantic dump
    ({"version": 0}, "--version 0: give 1 or more"),  # took the next version
    ({"labels": ["a", "a", "b"]}, r"--labels names \['a'\] more than once"),  # written as two classes 'a'
    ({"features": ["x", "x"]}, r"--features names \['x'\] more than once"),  # a CSV's x read for both
    # imported: onnxruntime's GRU turned the NaN inputs into finite answers, one answer for every input
    ({"mean": [float("nan"), 0.0], "std": [1.0, 1.0]}, "--mean and --std must be finite numbers"),
    ({"mean": [0.0, 0.0], "std": [float("inf"), 1.0]}, "--mean and --std must be finite numbers"),
])
def test_import_flags_that_cannot_describe_the_graph_are_refused_naming_the_flag(tmp_path: Path, flags: dict,
                                                                                 said: str) -> None:
    source = save(classifier(), tmp_path / "graph")
    request = ImportRequest(name="flags", task="classification", labels=LABELS)
    for key, value in flags.items():
        setattr(request, key, value)
    with pytest.raises(ValueError, match=said):
        import_graph(source, tmp_path / "models", request)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(("location", "said"), [
    ("../outside.bin", "points outside the directory"),
    ("/etc/hostname", "absolute path"),
    ("link.bin", "symbolic link"),
    ("missing.bin", "not regular file"),
])
def test_external_data_outside_the_graphs_folder_is_refused_as_such(tmp_path: Path, location: str,
                                                                    said: str) -> None:
    # before: "model.onnx is not an ONNX model (...)", whatever the reason; nothing outside is read (onnx
    # checks the location before it opens a file), which held
    folder = tmp_path / "graph"
    path = save(classifier(), folder)
    onnx.save(onnx.load(path), path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "outside.bin").write_bytes((folder / "weights.bin").read_bytes())
    (folder / "link.bin").symlink_to(tmp_path / "outside.bin")
    model = onnx.load(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, path)
    with pytest.raises(ValueError, match=rf"its external data cannot be read \(.*{said}.*\); keep the data"):
        import_graph(path, tmp_path / "models", ImportRequest(name="ext", task="classification",
                                                              labels=LABELS))
    assert not (tmp_path / "models").exists()


# -- bundles by hand, and gru predict against a real server --------------------------------------------------

def edited(repository: Path, source: Path, name: str, change) -> None:
    """A copy of the bundle at `source` as `name`, its manifest changed by hand."""
    target = repository / name / "1"
    target.mkdir(parents=True)
    for file in source.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["name"] = name
    change(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory: pytest.TempPathFactory):
    """A server (HTTP and gRPC) over an imported bundle and hand-edited copies of it."""
    repository = tmp_path_factory.mktemp("round10") / "models"
    good = imported(repository, "good")
    output = lambda m: m["output"].update(size=4, labels=[*LABELS, "d"])  # noqa: E731
    edited(repository, good, "four_labels", output)
    edited(repository, good, "three_features", lambda m: m["inputs"].update(features=["f0", "f1", "f2"]))
    edited(repository, good, "two_labels", lambda m: m["output"].update(labels=LABELS[:2]))
    edited(repository, good, "nested", lambda m: m["training"].update(test_metrics={"a": "NESTED"}))
    manifest = repository / "nested" / "1" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"NESTED"', "[" * 100_000 + "]" * 100_000))
    server = Server(repository, grpc=True).start()
    yield server
    server.stop()


@pytest.mark.parametrize(("name", "reason"), [
    ("four_labels", "output.size is 4 but onnx.outputs 'output' has 3 on its last axis"),
    ("three_features", "inputs.features names 3 but onnx.inputs 'x' has 2 on its last axis"),
    ("two_labels", "output.labels names 2 label(s) but output.size is 3"),
    ("nested", "nested/1/manifest.json: invalid manifest: (document): Invalid JSON: recursion limit"),
])
def test_a_manifest_that_miscounts_its_graph_is_refused_naming_the_field(hand_made: Server, name: str,
                                                                         reason: str) -> None:
    # before: four_labels served every answer with 4 labels and 3 probabilities; two_labels answered 500
    # when the third class won; three_features failed at warm-up ("InferenceError: onnxruntime failed:
    # Got invalid dimensions for input: x"); nested said "RecursionError: maximum recursion depth
    # exceeded", naming no file
    index = {m["name"]: m for m in httpx.post(f"{hand_made.url}/v2/repository/index").json()}
    assert index[name]["state"] == "UNAVAILABLE" and reason in index[name]["reason"]
    assert index["good"]["state"] == "READY"


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gru_cli", "predict", *args], capture_output=True,
                          text=True, timeout=60)


def one_line_error(done: subprocess.CompletedProcess, *said: str) -> None:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert all(s in done.stderr for s in said), done.stderr


def csv_file(folder: Path, text: str, encoding: str = "utf-8") -> str:
    path = folder / f"{abs(hash(text))}.csv"
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_predict_at_the_grpc_port_says_which_port_to_use(hand_made: Server, tmp_path: Path) -> None:
    # before: http.client.BadStatusLine's traceback (the gRPC port answers HTTP/2 frames)
    sequences = csv_file(tmp_path, "series_id,step,feature_0,feature_1\n1,0,0.5,1\n")
    done = predict("--url", f"http://{hand_made.grpc_url}", "--model", "good", "--file", sequences)
    one_line_error(done, "did not answer in HTTP/1.1", "is --url the HTTP port of `gru serve`")


def test_predict_at_a_server_that_is_not_gru_serve_says_so(tmp_path: Path) -> None:
    # before: a KeyError traceback ('inputs') for a JSON answer of another shape, "Expecting value: line 1
    # column 1 (char 0)" for one that is not JSON, "HTTP 501: Unsupported method ('POST')" alone
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m").write_text('{"name": "m"}')
    (tmp_path / "models" / "page").write_text("<html>hello</html>")
    (tmp_path / "seq.json").write_text('{"sequences": [[1, 2]]}')
    port = free_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        sequences = csv_file(tmp_path, "series_id,step,feature_0\n1,0,0.5\n")
        for model in ("m", "page"):
            one_line_error(predict("--url", url, "--model", model, "--file", sequences),
                           "not gru serve's JSON", "is --url the HTTP port of `gru serve`")
        one_line_error(predict("--url", url, "--model", "m", "--file", str(tmp_path / "seq.json")),
                       "HTTP 501", "is --url the HTTP port of `gru serve`")
    finally:
        other.terminate()
        other.wait(timeout=10)


def test_predict_refuses_a_step_given_twice_or_missing_and_a_file_not_utf8(hand_made: Server,
                                                                           tmp_path: Path) -> None:
    # before: two rows for step 0 went out as a two-step sequence, and steps 0, 1, 3 as three steps,
    # answered without a word (training refuses both files); a Latin-1 file said "'utf-8' codec can't
    # decode byte 0xe9 ...", naming no file
    header = "series_id,step,feature_0,feature_1\n"
    twice = csv_file(tmp_path, header + "1,0,0.5,1\n1,0,0.7,2\n1,1,0,0\n")
    one_line_error(predict("--url", hand_made.url, "--model", "good", "--file", twice),
                   "step '0' of series '1' appears in more than one row")
    missing = csv_file(tmp_path, header + "2,0,0.5,1\n7,5,1,1\n2,1,0.7,2\n2,3,0,0\n7,6,1,1\n")
    one_line_error(predict("--url", hand_made.url, "--model", "good", "--file", missing),
                   "no row for step 2 of series '2' (it goes 1, 3): add the missing row(s)")
    spaced = csv_file(tmp_path, header + "1,0,0.5,1\n1,10,0.7,2\n1,20,0,0\n")  # every 10: nothing missing
    assert predict("--url", hand_made.url, "--model", "good", "--file", spaced).returncode == 0
    latin = csv_file(tmp_path, "series_id,step,feature_0,feature_1,note\n1,0,0.5,1,café\n", "latin-1")
    one_line_error(predict("--url", hand_made.url, "--model", "good", "--file", latin),
                   f"{latin}: not UTF-8 text (byte", "save it as UTF-8")


def test_predict_names_stdin_that_is_not_json() -> None:
    # before: "gru predict: error: Expecting value: line 1 column 1 (char 0)", naming neither
    done = subprocess.run([sys.executable, "-m", "gru_cli", "predict", "--model", "m", "--file", "-",
                           "--url", f"http://127.0.0.1:{free_port()}"], input="series_id,step,x\n",
                          capture_output=True, text=True, timeout=60)
    one_line_error(done, "stdin: not JSON (Expecting value", '{"sequences": [...]}')


# -- gru tune ------------------------------------------------------------------------------------------------

def tune(tmp_path: Path, *args: str) -> int:
    return gru(["tune", "--run-dir", str(tmp_path / "runs"), "--max-epochs", "1", "--no-progress", *args])


@pytest.mark.parametrize(("args", "said"), [
    (["--trials", "0"], "--trials 0: give 1 or more"),
    (["--trials", "-3"], "--trials -3: give 1 or more"),
    (["--timeout", "0"], "--timeout 0: give the search's time budget in seconds"),
])
def test_tune_refuses_no_trials_before_any_work(tmp_path: Path, capsys, args: list[str], said: str) -> None:
    # before: each ran the search set-up and said "every trial was pruned or failed"
    assert tune(tmp_path, *args) == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("storage", "said"), [
    ("sqlite:///{dir}/not_a_database.db", "(sqlite3.DatabaseError) file is not a database"),
    ("sqlite:///file:{dir}/study.db?mode=ro&uri=true", "attempt to write a readonly database"),
    ("not-a-url", "Could not parse SQLAlchemy URL"),
    ("nosuch://host/db", "Can't load plugin: sqlalchemy.dialects:nosuch"),
    ("journal:{dir}/not_a_database.db", "Expecting value"),
])
def test_tune_names_a_storage_it_cannot_use(tmp_path: Path, capsys, storage: str, said: str) -> None:
    # before: tracebacks (DatabaseError, StorageInternalError, ArgumentError, NoSuchModuleError); the
    # journal's JSON error alone
    (tmp_path / "not_a_database.db").write_text("my notes, not a database\n")
    sqlite3.connect(tmp_path / "study.db").close()  # an empty database, opened read-only above
    url = storage.format(dir=tmp_path)
    assert tune(tmp_path, "--storage", url, "--study", "s", "--trials", "1") == 2
    error = capsys.readouterr().err
    assert f"gru tune: error: --storage {url}: " in error and said in error and "give sqlite:///" in error


# -- gru pull ------------------------------------------------------------------------------------------------

def pull(*args: str, mlflow: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gru_cli", "pull", *args, "--mlflow", mlflow],
                          capture_output=True, text=True, timeout=300)


def test_pull_from_a_server_that_is_down_fails_in_seconds(tmp_path: Path) -> None:
    # before: MLflow's 7 retries with backoff took 4 min 8 s, then a traceback
    pytest.importorskip("mlflow")
    started = time.monotonic()
    done = pull("italy/1", "--repository", str(tmp_path / "models"), mlflow=f"http://127.0.0.1:{free_port()}")
    one_line_error(done, "models:/italy/1: API request to", "is the MLflow server")
    assert time.monotonic() - started < 60


def test_pull_names_a_missing_version_and_refuses_a_tampered_bundle(mlflow_server: str,  # noqa: F811
                                                                    tmp_path: Path, monkeypatch) -> None:
    # before: a version that does not exist was a RestException traceback; a bundle whose model.onnx was
    # changed in the registry's artifact store was "pulled ... serve it", and the server refused it
    from mlflow import MlflowClient

    from service.registry import register_bundle

    bundle = imported(tmp_path / "built", "good")
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(variable, raising=False)  # restored after: register_bundle sets them here, and
        # a later test's training would log to this server, gone by then
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    registered = register_bundle(bundle, "round10", None)
    models = str(tmp_path / "models")
    one_line_error(pull("round10/9", "--repository", models, mlflow=mlflow_server),
                   "models:/round10/9: RESOURCE_DOES_NOT_EXIST", "check NAME/VERSION")
    client = MlflowClient(mlflow_server)
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for name in ("manifest.json", "model.onnx"):
        (tampered / name).write_bytes((bundle / name).read_bytes())
    with open(tampered / "model.onnx", "ab") as graph:
        graph.write(b"\x00")
    client.log_artifacts(registered.run_id, str(tampered), "tampered")
    version = client.create_model_version("round10", f"runs:/{registered.run_id}/tampered",
                                          run_id=registered.run_id).version
    one_line_error(pull(f"round10/{version}", "--repository", models, mlflow=mlflow_server),
                   "is not a bundle gru serve would load", "onnx.sha256 does not match model.onnx",
                   "nothing was written")
    assert not os.path.exists(models) or not any(Path(models).glob("good/*"))
    done = pull("round10/1", "--repository", models, mlflow=mlflow_server)
    assert done.returncode == 0 and (Path(models) / "good" / "1" / "model.onnx").exists(), done.stderr
