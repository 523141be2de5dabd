"""gru-serve's serving side: model bundles -> onnxruntime sessions -> REST. Never imports torch."""
