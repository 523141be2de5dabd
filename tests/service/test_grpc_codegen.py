"""The committed gRPC modules are what scripts/grpc_codegen.py makes from the committed .proto files, and
they describe the service tritonclient.grpc calls."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import tritonclient.grpc
from google.protobuf import descriptor_pb2

from scripts.grpc_codegen import OUT_DIR, generate


def test_generated_modules_match_the_proto_files(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in generate(tmp_path)}
    committed = {p.name: p.read_text() for p in OUT_DIR.iterdir() if p.suffix in (".py", ".pyi")}
    assert sorted(fresh) == sorted(committed)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"{stale} differ from the .proto files: run `python scripts/grpc_codegen.py` " \
                      "(with the dev extra's grpcio-tools) and commit the result"


def descriptor(module: Path) -> descriptor_pb2.FileDescriptorProto:
    literal = re.search(r"AddSerializedFile\((b'.*?')\)\n", module.read_text(), re.S)
    assert literal, module
    return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(literal[1]))


def fields(file: descriptor_pb2.FileDescriptorProto) -> set[tuple[str, str, int, int, str]]:
    """(message, field, number, type, type name) of every field, nested messages included."""
    found = set()

    def visit(messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str) -> None:
        for message in messages:
            name = f"{prefix}{message.name}"
            found.update((name, f.name, f.number, f.type, f.type_name) for f in message.field)
            visit(message.nested_type, f"{name}.")

    visit(file.message_type, "")
    return found


def test_the_service_is_the_one_tritonclient_speaks() -> None:
    """Every RPC and field of ours is in the installed tritonclient's copy, with the same number and
    type (a newer Triton may add some: it stays compatible)."""
    client = Path(tritonclient.grpc.__file__).parent
    pairs = (("grpc_service_pb2.py", "service_pb2.py"), ("model_config_pb2.py", "model_config_pb2.py"))
    for ours, theirs in pairs:
        mine, triton = descriptor(OUT_DIR / ours), descriptor(client / theirs)
        assert fields(mine) <= fields(triton), sorted(fields(mine) - fields(triton))[:5]
        methods = {(s.name, m.name, m.input_type, m.output_type) for s in mine.service for m in s.method}
        assert methods <= {(s.name, m.name, m.input_type, m.output_type) for s in triton.service
                           for m in s.method}
