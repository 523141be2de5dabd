"""Offline GRU training: config -> dataset -> GRUModel -> train loop -> checkpoint.

Knows nothing of ONNX or HTTP."""
