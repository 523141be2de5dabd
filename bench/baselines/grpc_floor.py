"""Baseline: the gRPC floor. A grpc.aio server on uvloop (as gru-serve's workers run it) whose ModelInfer
answers a constant response: what grpcio's Python server costs per call before any work is done
(bench/grpc_load.py runs it beside gru-serve, with the same load generator).

    python -m bench.baselines.grpc_floor PORT [WORKERS]
"""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import grpc
import uvloop

from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.generated.grpc_service_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)

ANSWER = pb.ModelInferResponse(model_name="small", model_version="1")
ANSWER.outputs.add(name="output", datatype="FP32", shape=[1, 2])
ANSWER.raw_output_contents.append(bytes(8))


class Constant(GRPCInferenceServiceServicer):
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return ANSWER


async def serve(port: int, reuse_port: bool) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
    add_GRPCInferenceServiceServicer_to_server(Constant(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def worker(port: int, reuse_port: bool) -> None:
    uvloop.run(serve(port, reuse_port))


if __name__ == "__main__":
    port, workers = int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1
    processes = [multiprocessing.Process(target=worker, args=(port, workers > 1)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
