"""The request parser: strict, with errors that name the field and what was expected."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from service.api.errors import InvalidInput, MalformedBody
from service.api.parsing import parse_predict_body
from service.bundle import InputSpec

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
    ({"sequences": [[1, 2]]}, InvalidInput, "sequences[0]", "feature"),
    ({"sequences": "abc"}, InvalidInput, "sequences", "non-empty list"),
])
def test_bad_input_names_the_field(body, error, field: str, message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        parse(body)
    assert caught.value.field == field
