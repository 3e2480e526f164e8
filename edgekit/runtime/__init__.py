"""Run exported models through one API: ``edgekit.load(path) -> EdgeModel``.

Modules: ``api`` (load, bundles, target profiles), ``model`` (EdgeModel), ``base`` (the Backend
Protocol), ``detect`` (format detection), one module per backend (``llamacpp``, ``onnxruntime``,
``torch``), ``chat`` (chat templates), ``textstream`` (streaming text, stop strings), and the file
checks that run before a backend maps a file (``safetensors_check``, ``gguf_check``, ``onnx_check``).
"""
