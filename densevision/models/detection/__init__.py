"""Detection models: DenseNet-FPN backbones on torchvision's detectors."""
