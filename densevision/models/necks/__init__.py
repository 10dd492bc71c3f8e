"""Necks: feature pyramid over the backbone feature dict."""
