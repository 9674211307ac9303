"""Wheels for the image's interpreter: resolve (uv), fetch (pip), install (installer)."""
