"""checkpoint -> ONNX -> verified model bundle. The only package that knows both torch and onnx."""
