"""Renderers: a deployment in, files out (pure functions; the tasks write the files)."""
