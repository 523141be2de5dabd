"""Codecs: what arrives (native JSON/binary bodies, v2 JSON/binary bodies, gRPC tensors) into NumPy, and
answers back out, with the checks and messages every API shares."""
