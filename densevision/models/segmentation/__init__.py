"""Segmentation models: FC-DenseNet (Tiramisu) and the Tiramisu decoder on DenseNet backbones."""
