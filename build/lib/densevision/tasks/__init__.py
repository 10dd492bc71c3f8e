"""LightningModules (tasks) and their demos."""
