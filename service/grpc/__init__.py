"""The Open Inference Protocol over gRPC (GRU_GRPC_PORT; README "gRPC").

proto/       Triton's grpc_service.proto and model_config.proto as published (triton-inference-server/common
             at 83adf7cf, BSD-3-Clause, the files' headers): `inference.GRPCInferenceService`, a superset of
             KServe's grpc_predict_v2.proto and the service tritonclient.grpc calls
generated/   protoc's modules, committed (scripts/grpc_codegen.py makes them; a test checks they match)
servicer.py  the RPCs, answered by the transport-free layer (service/inference.py, service/v2_model.py);
             the protobuf tensors are decoded and encoded by the v2 codec (service/codecs/v2.py)
calls.py     what every call gets: request id, auth, metrics, access log, errors as gRPC statuses
server.py    the grpc.aio server started in the app's lifespan, one per worker on the same port
"""
