"""dream: GPU container images and their services as content-addressed doit task graphs."""

__version__ = "0.1.0"
