"""Running trained models: the fast inference form (``optimize``), predictions on image files
(``predict``), backbone features (``features``) and ONNX / TorchScript export (``export``)."""
