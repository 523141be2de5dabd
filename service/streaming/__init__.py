"""Streaming with carried state: stateless signed state tokens, server-held sessions, and a batcher
that runs chunks of different sequences together. Unidirectional models only (Manifest.streaming_refusal)."""
