"""Running trained models: one preprocessing for every path (``preprocessing``), the fast inference form
(``optimize``), predictions on image files (``predict``), backbone features (``features``), export
(``export``) into self-describing model folders (``model_folder``) and the runtimes that run them
(``backends``)."""
