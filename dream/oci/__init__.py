"""OCI bytes: deterministic tar, compression, digests, image config and manifest."""
