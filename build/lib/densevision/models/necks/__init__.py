"""Necks: feature pyramid over the backbone feature dict."""

from densevision.models.necks.fpn import FPN

__all__ = ["FPN"]
