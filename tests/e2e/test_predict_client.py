"""`gru predict` against a real server: negative values after --values, the training files' long CSV
layout (ragged, shuffled, with a label column), JSON, a file split into requests within the server's limits,
and one-line errors for what a user can fix (HTTP errors, an unknown model, no server)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from tests.helpers import Server, free_port

README_SEQUENCE = ("-0.71,-1.18,-1.35,-1.59,-1.61,-1.35,-0.43,0.94,1.33,1.16,0.90,0.56,0.39,0.31,0.37,0.67,"
                   "0.62,0.47,0.58,1.40,1.32,0.67,-0.18,-0.48")


def predict(server, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gru_cli", "predict", "--url", server.url, "--model", "italy"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


def test_values_may_start_with_a_minus_sign(server) -> None:
    for args in (["--values", README_SEQUENCE], [f"--values={README_SEQUENCE}"]):
        out = predict(server, *args)
        assert out.returncode == 0, out.stderr
        assert len(json.loads(out.stdout)["predictions"][0]["probabilities"]) == 2


def test_a_csv_in_the_training_layout(server, tmp_path: Path) -> None:
    [feature] = httpx.get(f"{server.url}/models/italy").json()["inputs"]["features"]
    values = [float(v) for v in README_SEQUENCE.split(",")]
    rows = [f"b,{t},{v},1" for t, v in enumerate(values[:20])]
    rows += [f"a,{t},{v},2" for t, v in enumerate(values)]
    path = tmp_path / "series.csv"
    path.write_text(f"series_id,step,{feature},label\n" + "\n".join(reversed(rows)) + "\n")  # any order
    out = predict(server, "--file", str(path))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)["predictions"]
    assert [p["series_id"] for p in got] == ["a", "b"]  # in order of first appearance
    whole = json.loads(predict(server, "--values", README_SEQUENCE).stdout)["predictions"][0]
    assert got[0]["probabilities"] == whole["probabilities"]  # steps sorted: the same sequence

    body = tmp_path / "body.json"
    body.write_text(json.dumps({"sequences": [values]}))
    assert json.loads(predict(server, "--file", str(body)).stdout)["predictions"][0] == whole


def test_a_file_read_as_one_series_says_so(server, tmp_path: Path) -> None:
    """A sensor export whose series column is `unit`, not `series_id`: before, it was sent as one long
    sequence without a word (one meaningless answer for three pumps); now stderr says how it was read
    and names the flags, as `gru train` does, and with them each unit gets its own answer."""
    [feature] = httpx.get(f"{server.url}/models/italy").json()["inputs"]["features"]
    values = README_SEQUENCE.split(",")
    rows = [f"{unit},2026-03-01 08:00:{t:02d},{v}"
            for unit in ("p1", "p2", "p3") for t, v in enumerate(values)]
    path = tmp_path / "export.csv"
    path.write_text(f"unit,timestamp,{feature}\n" + "\n".join(rows) + "\n")
    out = predict(server, "--file", str(path))
    assert out.returncode == 0, out.stderr
    assert (f"gru predict: no 'series_id' column in export.csv: the file is one series (its columns: unit, "
            f"timestamp, {feature}); --id-column NAME names the series column") in out.stderr
    assert "no 'step' column in export.csv: its rows are in time order; --time-column NAME" in out.stderr
    named = predict(server, "--file", str(path), "--id-column", "unit", "--time-column", "timestamp")
    assert named.returncode == 0 and named.stderr == ""
    assert [p["series_id"] for p in json.loads(named.stdout)["predictions"]] == ["p1", "p2", "p3"]


def test_a_reader_that_leaves_early_is_not_an_error(server) -> None:
    """`gru predict ... | head -1` (or a jq that fails): before, "gru predict: error: [Errno 32] Broken
    pipe" and exit 2 for an answer that was fine; now nothing is said and the exit is 0."""
    command = [sys.executable, "-m", "gru_cli", "predict", "--url", server.url, "--model", "italy",
               "--values", README_SEQUENCE]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before the answer is printed (imports take a second)
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (0, "")


def test_values_for_a_model_of_several_features_names_them_and_the_fix(stream_server) -> None:
    """--values is one univariate sequence: for a 12-feature model it used to get the server's refusal of
    a JSON body the user never wrote ("a flat list ... shape [steps, 12]"); now the flag and --file."""
    command = [sys.executable, "-m", "gru_cli", "predict", "--url", stream_server.url, "--model",
               "vowels_uni", "--values", "0.1,0.2,0.3"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("gru predict: error: --values is one sequence of one feature; model "
                                 "'vowels_uni' takes 12 per step (")
    assert out.stderr.rstrip().endswith("and pass --file")


def test_what_a_user_can_fix_is_one_error_line(server, tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("a,b,c\n1,2,3\n")  # the old one-sequence layout
    out = predict(server, "--file", str(path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("gru predict: error: ") and "no column(s) [" in out.stderr
    assert "Expected the training files' long layout: series_id, step, then the model's" in out.stderr
    out = predict(server, "--values", "1,two,3")
    assert out.returncode == 2 and "'two' is not a number" in out.stderr


def test_a_refused_series_is_named_as_the_file_names_it(server, tmp_path: Path) -> None:
    """The third series, too long, sent in the third request (--max-sequences 1): before, the error said
    "sequences[0]", its index in that request; now its index in the file and its series id."""
    [feature] = httpx.get(f"{server.url}/models/italy").json()["inputs"]["features"]
    lengths = {"a": 24, "b": 24, "long": 300}  # over the italy bundle's max_length, 256
    rows = [f"{name},{t},0.5" for name, steps in lengths.items() for t in range(steps)]
    path = tmp_path / "three.csv"
    path.write_text(f"series_id,step,{feature}\n" + "\n".join(rows) + "\n")
    out = predict(server, "--file", str(path), "--max-sequences", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert ("HTTP 422 invalid_input (sequences[2], series 'long'): sequences[2] has 300 steps; this model "
            "accepts 1 to 256") in out.stderr, out.stderr


def _file_of(tmp_path: Path, count: int) -> tuple[Path, list[list[float]]]:
    rng = np.random.default_rng(0)
    sequences = rng.normal(size=(count, 24)).round(6).tolist()
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"sequences": sequences}))
    return path, sequences


def test_a_large_file_goes_out_as_requests_within_the_limits(server, tmp_path: Path) -> None:
    """2,500 sequences: over the 1,024 a request may hold, sent as 3 requests, answered as one."""
    path, sequences = _file_of(tmp_path, 2500)
    out = predict(server, "--file", str(path))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)["predictions"]
    assert len(got) == 2500
    for i in (0, 1023, 1024, 2499):  # the answers stay in the file's order across requests
        alone = predict(server, "--values", ",".join(map(str, sequences[i])))
        assert got[i] == json.loads(alone.stdout)["predictions"][0]


def test_a_server_with_a_lower_body_limit_is_named_with_the_fix(repository: Path, tmp_path: Path) -> None:
    path, _ = _file_of(tmp_path, 300)  # ~150 kB of JSON
    small = Server(repository, GRU_MAX_BODY_BYTES="40000").start()
    try:
        refused = predict(small, "--file", str(path))
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert refused.stderr.startswith("gru predict: error: ")
        assert "pass a smaller --max-bytes" in refused.stderr
        split = predict(small, "--file", str(path), "--max-bytes", "40000")
        assert split.returncode == 0, split.stderr
        assert len(json.loads(split.stdout)["predictions"]) == 300
    finally:
        small.stop()


def test_an_unknown_model_is_one_line_naming_the_available_ones(server) -> None:
    command = [sys.executable, "-m", "gru_cli", "predict", "--url", server.url, "--model", "nope",
               "--values", "1,2,3"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stdout == ""
    assert out.stderr.startswith("gru predict: error: HTTP 404 model_not_found")
    assert "loaded models: ['airline', 'italy']" in out.stderr
    assert out.stderr.rstrip().endswith("choose one of them with --model NAME")


def test_no_server_suggests_gru_serve() -> None:
    command = [sys.executable, "-m", "gru_cli", "predict", "--url", f"http://127.0.0.1:{free_port()}",
               "--model", "italy", "--values", "1,2,3"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "connection refused" in out.stderr and "`gru serve`" in out.stderr
