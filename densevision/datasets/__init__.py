"""Datasets, transforms presets, data modules and the generated embedded datasets."""
