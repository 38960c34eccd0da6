"""SageMaker inference container for the ticket classifier (int8 ONNX, no torch).

``python -m inference_server serve`` is the image's entry point; see ``app.py`` for the HTTP
contract and ``batching.py`` for how tickets are grouped into ONNX Runtime batches.
"""

__version__ = "1.0.0"
