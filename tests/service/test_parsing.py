"""The request parser: strict, with errors that name the field and what was expected."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.bundle import InputSpec
from service.codecs.native import parse_predict_binary, parse_predict_body
from service.errors import InvalidInput, MalformedBody

UNI = InputSpec(features=["value"], max_length=10)
MULTI = InputSpec(features=["a", "b"], max_length=10)


def parse(body: object, spec: InputSpec = MULTI) -> list[np.ndarray]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_predict_body(raw, spec, max_sequences=4)


def test_mixed_lengths_and_flat_univariate_sequences() -> None:
    arrays = parse({"sequences": [[[1, 2], [3, 4.5]], [[0, 0]]]})
    assert [a.shape for a in arrays] == [(2, 2), (1, 2)] and arrays[0].dtype == np.float32
    assert parse({"sequences": [[1, 2, 3]]}, UNI)[0].shape == (3, 1)


@pytest.mark.parametrize("body, error, field, message", [
    (b"{", MalformedBody, "body", "not valid JSON"),
    (b'{"sequences": [[[NaN, 1]]]}', MalformedBody, "body", "not valid JSON"),
    (b'{"sequences": [[[1, 2]]]}\xff', MalformedBody, "body", "not valid JSON"),
    ([1], InvalidInput, "body", "JSON object"),
    ({"sequences": [[[1, 2]]], "extra": 1}, InvalidInput, "extra", "unknown field"),
    ({"sequences": []}, InvalidInput, "sequences", "non-empty"),
    ({"sequences": [[[1, 2]]] * 5}, InvalidInput, "sequences", "limit is 4"),
    ({"sequences": [[[1, 2]], []]}, InvalidInput, r"sequences[1]", "empty"),
    ({"sequences": [[[1, 2], [3]]]}, InvalidInput, "sequences[0]", "ragged"),
    ({"sequences": [[[1, 2, 3]]]}, InvalidInput, "sequences[0]", "3 feature"),
    ({"sequences": [[[1, "2"]]]}, InvalidInput, "sequences[0]", "only numbers"),
    ({"sequences": [[[1, True]]]}, InvalidInput, "sequences[0]", "only numbers"),
    ({"sequences": [[[1, None]]]}, InvalidInput, "sequences[0]", "only numbers"),
    ({"sequences": [[[1, 1e39]]]}, InvalidInput, "sequences[0][0]", "finite float32"),
    ({"sequences": [[[1, 2]] * 11]}, InvalidInput, "sequences[0]", "1 to 10"),
    ({"sequences": [[1, 2, 3]]}, InvalidInput, "sequences[0]",
     r"is a flat list of 3 number\(s\), one feature per step; this model takes a list of steps, each a list "
     r"of 2 number\(s\) \(a, b\): shape \[steps, 2\]"),
    ({"sequences": [[[[1, 2]]]]}, InvalidInput, "sequences[0]", r"has shape \[1, 1, 2\]; this model takes"),
    ({"sequences": "abc"}, InvalidInput, "sequences", "non-empty list"),
])
def test_bad_input_names_the_field(body, error, field: str, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        parse(body)
    assert caught.value.field == field


def binary(x: np.ndarray, lengths: str | None = None) -> list[np.ndarray]:
    shape = ",".join(map(str, x.shape))
    return parse_predict_binary(x.astype("<f4").tobytes(), shape, lengths, MULTI, max_sequences=4)


def test_binary_body_gives_the_json_paths_arrays() -> None:
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    as_json = parse({"sequences": x.tolist()})
    for got, want in zip(binary(x), as_json, strict=True):
        assert got.dtype == np.float32 and np.array_equal(got, want)
    ragged = binary(x, lengths="3,1")  # the padded form: sequence 1 is its first step
    assert [a.shape for a in ragged] == [(3, 2), (1, 2)] and np.array_equal(ragged[1], x[1, :1])
    x[1, 2] = np.nan  # padding is never read, so never checked
    assert len(binary(x, lengths="3,2")) == 2


@pytest.mark.parametrize("shape, lengths, body, error, field, message", [
    (None, None, None, MalformedBody, "x-shape", "X-Shape header"),
    ("2,3", None, None, MalformedBody, "x-shape", "three positive integers"),
    ("2,3,x", None, None, MalformedBody, "x-shape", "three positive integers"),
    ("2,0,2", None, None, MalformedBody, "x-shape", "three positive integers"),
    ("2,3,3", None, None, InvalidInput, "x-shape", "3 feature"),
    ("5,3,2", None, None, InvalidInput, "x-shape", "limit is 4"),
    ("2,11,2", None, None, InvalidInput, "x-shape", "1 to 10"),
    ("2,3,2", "3", None, MalformedBody, "x-lengths", "2 sequence"),
    ("2,3,2", "3,4", None, InvalidInput, "x-lengths[1]", "1 to 3"),
    ("2,3,2", "3,0", None, InvalidInput, "x-lengths[1]", "1 to 3"),
    ("2,3,2", "3,-1", None, MalformedBody, "x-lengths", "integers"),
    ("2,3,2", None, b"\0" * 44, MalformedBody, "body", "44 bytes.*48 bytes"),
    ("2,3,2", None, np.array([0] * 9 + [np.inf] + [0] * 2, "<f4").tobytes(), InvalidInput,
     "sequences[1][1]", "not a finite"),
])
def test_bad_binary_input_names_the_field(shape, lengths, body, error, field: str, message: str) -> None:
    raw = np.zeros(12, "<f4").tobytes() if body is None else body
    with pytest.raises(error, match=message) as caught:
        parse_predict_binary(raw, shape, lengths, MULTI, max_sequences=4)
    assert caught.value.field == field
