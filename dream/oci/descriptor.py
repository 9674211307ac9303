"""The OCI content descriptor, dream's one type for "a blob: its media type, digest, size"."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dream.errors import DreamError


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor, plus the uncompressed digest for layers."""

    mediaType: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    diffID: str = ""

    def oci(self) -> dict[str, Any]:
        """The descriptor as it appears in a manifest or index (no dream-only fields)."""
        out: dict[str, Any] = {"mediaType": self.mediaType, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, data: Any) -> "Descriptor":
        """A descriptor from its JSON; anything of another shape is a `DreamError`."""
        if not isinstance(data, dict):
            raise DreamError(f"not a content descriptor: {excerpt(data)}")
        values = {"mediaType": data.get("mediaType"), "digest": data.get("digest"), "size": data.get("size"),
                  "annotations": data.get("annotations", {}), "diffID": data.get("diffID", "")}
        if not (isinstance(values["mediaType"], str) and isinstance(values["digest"], str)
                and type(values["size"]) is int and values["size"] >= 0  # noqa: E721 (bool is no size)
                and isinstance(values["annotations"], dict) and isinstance(values["diffID"], str)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in values["annotations"].items())):
            raise DreamError(f"not a content descriptor: {excerpt(data)}")
        return cls(**values)


def excerpt(value: Any) -> str:
    """``value`` as JSON, cut to 80 characters (for one-line errors)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
