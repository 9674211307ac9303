"""The OCI image layout on disk, written so that no crash can leave a bad state behind.

- Blobs go to ``dream/tmp/`` first and are renamed into ``blobs/sha256/`` only once complete
  and hashed: a blob's name is always its content's digest, a half-written blob is never seen.
- Refs (``dream/refs/<key>.json``) map a layer's input key to its descriptor; they are written
  after their blob, so a ref never points at a missing blob.
- ``index.json`` names each built image (annotation ``org.opencontainers.image.ref.name``), so
  ``skopeo inspect oci:STORE:NAME`` and ``umoci unpack --image STORE:NAME`` work.
- Sources (``dream/sources/<hex>.json``) list the registry repositories (``host/repo``) known
  to hold a blob. A descriptor whose blob is only there (a base image's layer, a layer found in
  the remote cache) counts as available: its bytes are fetched, verified, only when something
  reads them (`local_blob`), and a push to the same registry mounts it instead of uploading.
- doit's own database has no locking: builds hold a shared lock on the store and ``gc`` an
  exclusive one; read-modify-write of ``index.json`` takes a short exclusive lock of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from dream.errors import DreamError

INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_STORE = ".dream/store"


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
    def from_json(cls, data: dict[str, Any]) -> "Descriptor":
        return cls(mediaType=data["mediaType"], digest=data["digest"], size=data["size"],
                   annotations=data.get("annotations", {}), diffID=data.get("diffID", ""))


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (memory stays flat for any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(value: Any) -> bytes:
    """The one JSON spelling dream hashes and writes: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class BlobWriter:
    """Streams bytes into a temporary file, hashing them; `commit` makes the blob visible."""

    def __init__(self, store: "Store") -> None:
        self.store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="blob-")
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide blobs from other users' tools
        self.path = Path(name)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        if data:
            self.hash.update(data)
            self.file.write(data)
            self.size += len(data)

    def commit(self) -> tuple[str, int]:
        """Flush, fsync and rename into place; returns (digest, size)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        digest = "sha256:" + self.hash.hexdigest()
        target = self.store.blob_path(digest)
        if target.exists() and target.stat().st_size == self.size:
            self.path.unlink()
        else:
            os.replace(self.path, target)
        return digest, self.size

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class Store:
    """An OCI image layout directory with dream's refs and locks beside the blobs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.meta = root / "dream"
        self.refs = self.meta / "refs"
        self.tmp_dir = self.meta / "tmp"
        self.locks = self.meta / "locks"
        self.sources_dir = self.meta / "sources"

    # -- set-up ---------------------------------------------------------------------------
    def init(self) -> "Store":
        """Create the layout if missing (idempotent, safe to race)."""
        for directory in (self.blobs, self.refs, self.tmp_dir, self.locks, self.sources_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout = self.root / "oci-layout"
        if not layout.exists():
            self._write_atomic(layout, canonical_json({"imageLayoutVersion": "1.0.0"}))
        if not (self.root / "index.json").exists():
            with self.lock("index"):
                if not (self.root / "index.json").exists():
                    self._write_index({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []})
        return self

    # -- locks ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, name: str, shared: bool = False) -> Iterator[None]:
        """An `flock` on ``dream/locks/<name>.lock``: "store" (builds shared, gc exclusive), "index"."""
        self.locks.mkdir(parents=True, exist_ok=True)
        with open(self.locks / f"{name}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise DreamError(f"unsupported digest {digest!r}")
        return self.blobs / hexdigest

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        path = self.blob_path(digest)
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return False
        return size is None or actual == size

    def available(self, descriptor: Descriptor) -> bool:
        """In the store, or known to be in a registry repository it can be fetched from."""
        return self.has_blob(descriptor.digest, descriptor.size) or bool(self.sources(descriptor.digest))

    def local_blob(self, descriptor: Descriptor) -> Path:
        """The blob's file; a blob known only by its sources is fetched (and verified) first."""
        if not self.has_blob(descriptor.digest, descriptor.size):
            if not self.sources(descriptor.digest):
                raise DreamError(f"blob {descriptor.digest} is not in the store and has no known source")
            from dream.registry.fetch import fetch_blob  # the store itself never needs the network
            fetch_blob(self, descriptor)
        return self.blob_path(descriptor.digest)

    # -- sources: where else a blob lives ---------------------------------------------------
    def _sources_path(self, digest: str) -> Path:
        return self.sources_dir / self.blob_path(digest).name

    def sources(self, digest: str) -> list[str]:
        try:
            return list(json.loads(self._sources_path(digest).read_bytes()))
        except (FileNotFoundError, ValueError):
            return []

    def add_source(self, digest: str, location: str) -> None:
        """Remember that the repository ``location`` (``host/repo``) holds ``digest``."""
        with self.lock("sources"):
            known = self.sources(digest)
            if location not in known:
                self.sources_dir.mkdir(parents=True, exist_ok=True)
                self._write_atomic(self._sources_path(digest), canonical_json(sorted([*known, location])))

    def drop_source(self, digest: str, location: str) -> None:
        """Forget ``location`` as a source of ``digest`` (it answered that it no longer has it)."""
        with self.lock("sources"):
            known = [source for source in self.sources(digest) if source != location]
            path = self._sources_path(digest)
            if known:
                self._write_atomic(path, canonical_json(known))
            else:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def blob_writer(self) -> Iterator[BlobWriter]:
        """Write a blob of unknown digest; it becomes visible only when `commit` is called."""
        writer = BlobWriter(self)
        try:
            yield writer
        finally:
            if not writer.file.closed:
                writer.abort()

    def put_bytes(self, data: bytes, media_type: str) -> Descriptor:
        """Store a small blob (config, manifest) and return its descriptor."""
        with self.blob_writer() as writer:
            writer.write(data)
            digest, size = writer.commit()
        return Descriptor(media_type, digest, size)

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def read_json(self, digest: str) -> Any:
        return json.loads(self.read_blob(digest))

    # -- refs: input key → descriptor ----------------------------------------------------
    def _ref_path(self, key: str) -> Path:
        return self.refs / key[:2] / f"{key}.json"

    def get_ref(self, key: str) -> Descriptor | None:
        """The descriptor built for ``key``, if its blob is present or has a known source."""
        try:
            data = json.loads(self._ref_path(key).read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        descriptor = Descriptor.from_json(data)
        return descriptor if self.available(descriptor) else None

    def put_ref(self, key: str, descriptor: Descriptor) -> None:
        path = self._ref_path(key)
        path.parent.mkdir(exist_ok=True)
        self._write_atomic(path, canonical_json(asdict(descriptor)))

    def drop_ref(self, key: str) -> bool:
        """Forget what ``key`` built (`doit clean`): the next build makes the layer again. The
        blob stays, for other refs and tags that name it, until `gc`. True if there was a ref."""
        try:
            self._ref_path(key).unlink()
            return True
        except FileNotFoundError:
            return False

    # -- index ----------------------------------------------------------------------------
    def index(self) -> dict[str, Any]:
        index: dict[str, Any] = json.loads((self.root / "index.json").read_bytes())
        return index

    def tagged(self, name: str) -> Descriptor | None:
        """The manifest descriptor tagged ``name`` in index.json."""
        for entry in self.index()["manifests"]:
            if entry.get("annotations", {}).get(REF_NAME) == name:
                return Descriptor.from_json(entry)
        return None

    def tag(self, name: str, manifest: Descriptor) -> None:
        """Point ``name`` at ``manifest`` (replacing an older entry of that name)."""
        entry = manifest.oci()
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: name}
        with self.lock("index"):
            index = self.index()
            index["manifests"] = [m for m in index["manifests"]
                                  if m.get("annotations", {}).get(REF_NAME) != name] + [entry]
            index["manifests"].sort(key=lambda m: m.get("annotations", {}).get(REF_NAME, ""))
            self._write_index(index)

    def untag(self, name: str) -> bool:
        """Remove the image ``name`` from index.json (`doit clean build:name`); True if it was there."""
        with self.lock("index"):
            try:
                index = self.index()
            except FileNotFoundError:
                return False
            kept = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) != name]
            if len(kept) == len(index["manifests"]):
                return False
            index["manifests"] = kept
            self._write_index(index)
            return True

    def _write_index(self, index: dict[str, Any]) -> None:
        self._write_atomic(self.root / "index.json", json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")

    # -- helpers --------------------------------------------------------------------------
    def _write_atomic(self, path: Path, data: bytes) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="meta-")
        os.fchmod(fd, 0o644)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise


def store_path() -> Path:
    """``DREAM_STORE`` or ``.dream/store`` below the current directory."""
    return Path(os.environ.get("DREAM_STORE") or DEFAULT_STORE).absolute()


def open_store(root: Path | None = None) -> Store:
    """The store at ``root`` (default: `store_path`), created if missing.

    A path that cannot be a store (a file, an unwritable directory) is one line naming the
    setting, not the traceback of the first mkdir that failed.
    """
    from dream.workdirs import check_directory, label
    path = root or store_path()
    check_directory("DREAM_STORE", path)
    try:
        return Store(path).init()
    except OSError as exc:
        raise DreamError(f"{label('DREAM_STORE', path)}: cannot set up the store: {exc.strerror or exc}") from None
