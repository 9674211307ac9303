"""The local store: a plain OCI image layout plus dream's small refs (input key → descriptor)."""

from dream.store.layout import Descriptor, Store, open_store

__all__ = ["Descriptor", "Store", "open_store"]
