"""The local store: a plain OCI image layout plus dream's small refs (input key → descriptor)."""

from dream.store.layout import BlobFetch, Descriptor, Store, open_store

__all__ = ["BlobFetch", "Descriptor", "Store", "open_store"]
