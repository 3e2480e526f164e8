"""Export to GGUF and ONNX, quantization, importance matrices and the verification gate."""
