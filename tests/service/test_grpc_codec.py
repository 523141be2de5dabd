"""The gRPC forms of the v2 codec (service/codecs/v2.py): a ModelInferRequest becomes the same InferRequest as
a JSON body, and every malformed one is refused naming the field, before anything runs."""

from __future__ import annotations

import numpy as np
import pytest

from service.codecs.v2 import decode_infer, encode_infer
from service.errors import ApiError
from service.grpc.generated import grpc_service_pb2 as pb


def request(*tensors: tuple[str, list[int], np.ndarray | None], raw: bool = True,
            **parameters: bool | int | str) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id="r-1")
    for name, shape, data in tensors:
        tensor = message.inputs.add(name=name, datatype="FP32", shape=shape)
        if data is not None and raw:
            message.raw_input_contents.append(np.asarray(data, "<f4").tobytes())
        elif data is not None:
            tensor.contents.fp32_contents.extend(np.asarray(data, np.float32).reshape(-1).tolist())
    for key, value in parameters.items():
        kind = {bool: "bool_param", int: "int64_param", str: "string_param"}[type(value)]
        setattr(message.parameters[key], kind, value)
    return message


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "contents"])
def test_raw_and_typed_inputs_decode_alike(raw: bool) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1) / 7
    state = np.ones((2, 4), np.float32)
    decoded = decode_infer(request(("x", [2, 3, 1], x), ("state", [2, 4], state), raw=raw,
                                   sequence_id="abc", sequence_start=True))
    np.testing.assert_array_equal(decoded.inputs["x"], x)
    np.testing.assert_array_equal(decoded.inputs["state"], state)
    assert decoded.id == "r-1" and decoded.outputs == ["output", "next_state"]
    assert decoded.parameters == {"sequence_id": "abc", "sequence_start": True}


def test_outputs_come_back_raw_in_the_order_asked() -> None:
    message = request(("x", [1, 2, 1], [0.5, 1.5]))
    message.outputs.add(name="next_state")
    decoded = decode_infer(message)

    class Manifest:
        name, version = "m", 3

    arrays = {"output": np.array([[0.25, 0.75]]), "next_state": np.array([[1.0, 2.0, 3.0]])}
    response = encode_infer(Manifest, decoded, arrays, pb.ModelInferResponse())  # type: ignore[arg-type]
    assert (response.model_name, response.model_version, response.id) == ("m", "3", "r-1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("next_state", "FP32", [1, 3])]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], "<f4"), [1, 2, 3])


def bad(message: pb.ModelInferRequest) -> ApiError:
    with pytest.raises(ApiError) as caught:
        decode_infer(message)
    return caught.value


def test_refusals_name_the_field() -> None:
    assert bad(pb.ModelInferRequest(model_name="m")).field == "inputs"
    two = request(("x", [1, 1, 1], [1.0]), ("x", [1, 1, 1], [2.0]))
    assert bad(two).field == "inputs[1].name" and "twice" in bad(two).message
    short = request(("x", [1, 2, 1], [1.0]))
    assert bad(short).field == "raw_input_contents[0]" and "needs 8" in bad(short).message
    missing = request(("x", [1, 1, 1], [1.0]), ("state", [1, 4], None))
    assert bad(missing).field == "raw_input_contents" and "2 inputs" in bad(missing).message
    typed = request(("x", [1, 2, 1], [1.0]), raw=False)
    assert bad(typed).field == "inputs[0].contents.fp32_contents"
    ints = request(("x", [1, 1, 1], None))
    ints.inputs[0].contents.int_contents.append(3)
    assert bad(ints).field == "inputs[0].contents" and "contents.int_contents" in bad(ints).message
    both = request(("x", [1, 1, 1], [1.0]))
    both.inputs[0].contents.fp32_contents.append(1.0)
    assert bad(both).field == "inputs[0].contents"
    fp64 = request(("x", [1, 1, 1], None))
    fp64.inputs[0].datatype = "FP64"
    fp64.inputs[0].contents.fp64_contents.append(1.0)
    assert bad(fp64).field == "inputs[0].datatype" and "'FP64'" in bad(fp64).message
    negative = request(("x", [1, -1, 1], None))
    assert bad(negative).field == "inputs[0].shape"
    wrong_output = request(("x", [1, 1, 1], [1.0]))
    wrong_output.outputs.add(name="probabilities")
    assert bad(wrong_output).field == "outputs[0].name"
