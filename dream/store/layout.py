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
  reads them (`local_blob`, through the ``fetch`` hook the store was opened with), and a push to the same registry mounts it instead of uploading.
- When a tag moves to another manifest (or is removed), ``dream/previous/<name>.json`` keeps
  the manifest and config it named before, so `doit inspect` can say what the last build changed.
- A blob is trusted only once its bytes were hashed on this machine: a marker
  (``dream/verified/<hex>``) records the file's stat (size, mtime, ctime, inode) as it was when
  hashed, so an unchanged file is not hashed again (a no-op build stays a few stats), while a
  blob changed in any way is hashed afresh, and one that no longer matches its digest counts as
  absent: the next build or fetch replaces it (`BlobWriter.commit`), reads refuse it.
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
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator
from urllib.parse import quote

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.oci.descriptor import excerpt as _excerpt
from dream.oci.digest import canonical_json, file_sha256
from dream.oci.mediatypes import INDEX as INDEX_MEDIA_TYPE

__all__ = ["BlobFetch", "BlobWriter", "DEFAULT_STORE", "Descriptor", "INDEX_MEDIA_TYPE", "REF_NAME", "Store",
           "blob_stamp", "canonical_json", "file_sha256", "open_store", "store_path"]

REF_NAME = "org.opencontainers.image.ref.name"
DEFAULT_STORE = ".dream/store"


def blob_stamp(stat: os.stat_result) -> str:
    """What a verified blob's marker records: any write, replacement or chmod changes it."""
    return f"{stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {stat.st_ino}"


class BlobWriter:
    """Streams bytes into a temporary file, hashing them; `commit` makes the blob visible.

    A store that cannot be written (a full disk, a read-only or missing ``dream/tmp``) is one
    line (`DreamError`), and the temporary file is always removed: nothing half-written stays.
    """

    def __init__(self, store: "Store") -> None:
        self.store = store
        fd, name = store.temporary("blob-")  # one line when dream/tmp cannot take a file
        self.path = Path(name)
        try:
            self.file: BinaryIO = os.fdopen(fd, "wb")
        except OSError as exc:
            os.close(fd)
            self.path.unlink(missing_ok=True)
            raise self._failed(exc) from None
        self.hash = hashlib.sha256()
        self.size = 0

    def _failed(self, exc: OSError) -> DreamError:
        return DreamError(f"cannot write to the store {self.store.root}: {exc.strerror or exc}")

    def write(self, data: bytes) -> None:
        if data:
            try:
                self.file.write(data)
            except OSError as exc:
                self.abort()
                raise self._failed(exc) from None
            self.hash.update(data)
            self.size += len(data)

    def commit(self) -> tuple[str, int]:
        """Flush, fsync and rename into place; returns (digest, size)."""
        digest = "sha256:" + self.hash.hexdigest()
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            target = self.store.blob_path(digest)
            if self.store.has_blob(digest, self.size, rehash=False):
                self.path.unlink()  # the same bytes, already checked on this machine
            else:
                os.replace(self.path, target)  # absent, or not known good: ours are
                with contextlib.suppress(OSError, DreamError):  # a marker only saves a hash
                    self.store.mark_verified(digest)
        except OSError as exc:
            self.abort()
            raise self._failed(exc) from None
        return digest, self.size

    def abort(self) -> None:
        """Drop the temporary file; closing it may fail again (the bytes it still buffers
        cannot be written to a full disk), which must not keep the file on disk."""
        try:
            self.file.close()
        except OSError:
            pass
        finally:
            self.path.unlink(missing_ok=True)


BlobFetch = Callable[["Store", Descriptor], None]
"""How a store gets a blob it knows only by its sources: download it into the store (verified,
through `Store.blob_writer`) or raise `DreamError`. The task layer passes one in
(`dream.registry.fetch.fetch_blob`): the store itself never imports the registry."""


class Store:
    """An OCI image layout directory with dream's refs and locks beside the blobs.

    ``fetch`` is called for a blob that only a registry holds (`local_blob`); a store opened
    without one reads local blobs only.
    """

    def __init__(self, root: Path, fetch: BlobFetch | None = None) -> None:
        self.root = root
        self.fetch = fetch
        self.blobs = root / "blobs" / "sha256"
        self.meta = root / "dream"
        self.refs = self.meta / "refs"
        self.tmp_dir = self.meta / "tmp"
        self.locks = self.meta / "locks"
        self.sources_dir = self.meta / "sources"
        self.verified = self.meta / "verified"
        self.rootfs = self.meta / "rootfs"  # image layers unpacked for run steps (a cache)
        self._checked: dict[str, tuple[str, bool]] = {}  # hex → (stamp, verdict), this process

    # -- set-up ---------------------------------------------------------------------------
    def init(self) -> "Store":
        """Create the layout if missing (idempotent, safe to race)."""
        for directory in (self.tmp_dir, self.locks, self.verified):  # dream's scratch: no data
            if directory.exists() and not directory.is_dir():  # kept aside, never deleted
                os.replace(directory, directory.with_name(directory.name + ".not-a-directory"))
        for directory in (self.blobs, self.refs, self.tmp_dir, self.locks, self.sources_dir, self.verified):
            if directory.exists() and not directory.is_dir():
                raise DreamError(f"{directory}: not a directory (the store keeps its "
                                 f"{directory.name} there); remove it, or run `doit verify --repair`")
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
        if name == "store" and shared:  # a build: gc spares what it makes (dream/store/running.py)
            from dream.store.running import register
            register(self)
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

    def has_blob(self, digest: str, size: int | None = None, rehash: bool = True) -> bool:
        """The blob is here, of ``size``, and its bytes are ``digest``'s: hashed once on this
        machine, then trusted while the file's stat stays as it was (see `mark_verified`).
        A file that fails the check counts as absent, so whatever needs it makes it again.
        ``rehash=False`` trusts only a marker, never hashing (a writer about to replace it)."""
        path = self.blob_path(digest)
        for _ in range(3):  # a file replaced while it was hashed is looked at again
            try:
                before = path.stat()
            except OSError:
                return False
            if size is not None and before.st_size != size:
                return False
            stamp = blob_stamp(before)
            known = self._checked.get(path.name)
            if known is not None and known[0] == stamp:
                return known[1]
            if self._marker_says(path.name, stamp):
                self._checked[path.name] = (stamp, True)
                return True
            if not rehash:
                return False
            try:
                good = file_sha256(path) == path.name
                after = blob_stamp(path.stat())
            except OSError:
                return False
            if after != stamp:
                continue
            self._checked[path.name] = (stamp, good)
            if good:
                with contextlib.suppress(OSError, DreamError):  # a marker only saves a later hash
                    self._write_marker(path.name, stamp)
            return good
        return False

    def _marker_says(self, hexdigest: str, stamp: str) -> bool:
        try:
            return (self.verified / hexdigest).read_text() == stamp
        except (OSError, UnicodeDecodeError):
            return False

    def _write_marker(self, hexdigest: str, stamp: str) -> None:
        # no fsync: a marker lost in a crash only costs one more hash of that blob
        self.verified.mkdir(parents=True, exist_ok=True)
        fd, name = self.temporary("mark-")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(stamp)
            os.replace(name, self.verified / hexdigest)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise

    def mark_verified(self, digest: str) -> None:
        """Record that the blob's bytes were just checked (written by us, or hashed)."""
        path = self.blob_path(digest)
        stamp = blob_stamp(path.stat())
        self._checked[path.name] = (stamp, True)
        self._write_marker(path.name, stamp)

    def forget_blob(self, digest: str) -> None:
        """Remove a blob and its marker (gc of an unused blob, `verify --repair` of a corrupt one)."""
        path = self.blob_path(digest)
        path.unlink(missing_ok=True)
        (self.verified / path.name).unlink(missing_ok=True)
        self._checked.pop(path.name, None)

    def verified_path(self, descriptor: Descriptor) -> Path:
        """The blob's file, whose bytes were checked against its digest (`has_blob`); a blob
        that is corrupt or absent is one line. What streams bytes out (load, push) reads these."""
        if not self.has_blob(descriptor.digest, descriptor.size):
            raise DreamError(self._unusable(descriptor.digest, descriptor.size))
        return self.blob_path(descriptor.digest)

    def _unusable(self, digest: str, size: int | None = None) -> str:
        path = self.blob_path(digest)
        try:
            actual = path.stat().st_size
        except OSError:
            return f"blob {digest} is missing from the store; build the image again"
        what = f"has {actual} bytes, not {size}" if size is not None and actual != size else "does not match its digest"
        return (f"blob {digest} in the store is corrupt ({what}); the next build or fetch replaces "
                "it, `doit verify --repair` removes it")

    def available(self, descriptor: Descriptor) -> bool:
        """In the store, or known to be in a registry repository it can be fetched from."""
        return self.has_blob(descriptor.digest, descriptor.size) or bool(self.sources(descriptor.digest))

    def local_blob(self, descriptor: Descriptor) -> Path:
        """The blob's file, verified (`has_blob`); a blob known only by its sources, or corrupt
        here but held by one of them, is fetched (and verified) first."""
        if not self.has_blob(descriptor.digest, descriptor.size):
            if not self.sources(descriptor.digest):
                if self.blob_path(descriptor.digest).exists():
                    raise DreamError(self._unusable(descriptor.digest, descriptor.size))
                raise DreamError(f"blob {descriptor.digest} is not in the store and has no known source")
            if self.fetch is None:
                raise DreamError(f"blob {descriptor.digest} is only in a registry "
                                 f"({', '.join(self.sources(descriptor.digest))}); this store was "
                                 "opened without registry access")
            self.fetch(self, descriptor)
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
        """A small blob's bytes (config, manifest), hashed on every read: never unverified."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise DreamError(self._unusable(digest)) from None
        except OSError as exc:
            raise DreamError(f"blob {digest}: cannot read it: {exc.strerror or exc}") from None
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise DreamError(self._unusable(digest))
        return data

    def read_json(self, digest: str) -> Any:
        try:
            return json.loads(self.read_blob(digest))
        except (ValueError, RecursionError) as exc:
            raise DreamError(f"blob {digest} is not JSON ({exc})") from None

    def read_manifest(self, digest: str) -> dict[str, Any]:
        """An image manifest: its config and layers as descriptors' JSON (checked shape)."""
        body = self.read_json(digest)
        if not (isinstance(body, dict) and isinstance(body.get("layers", []), list)):
            raise DreamError(f"blob {digest} is not an image manifest")
        for child in [body.get("config"), *body.get("layers", [])]:
            Descriptor.from_json(child)  # raises for anything that is not one
        return body

    # -- refs: input key → descriptor ----------------------------------------------------
    def _ref_path(self, key: str) -> Path:
        return self.refs / key[:2] / f"{key}.json"

    def get_ref(self, key: str) -> Descriptor | None:
        """The descriptor built for ``key``, if its blob is present or has a known source."""
        try:
            descriptor = self.read_ref(self._ref_path(key))
        except (OSError, DreamError):
            return None  # no ref, or one that is not a descriptor: the build makes it afresh
        return descriptor if self.available(descriptor) else None

    def read_ref(self, path: Path) -> Descriptor:
        """The descriptor in a ref file; `DreamError` if it holds anything else, or was
        written for another key (a ref copied over another: its layer is not this key's)."""
        try:
            data = json.loads(path.read_bytes())
            descriptor = Descriptor.from_json(data)
        except (ValueError, RecursionError, DreamError) as exc:
            raise DreamError(f"ref {path.stem}: not a descriptor ({exc})") from None
        if data.get("key", path.stem) != path.stem:  # refs written before keys were recorded have none
            raise DreamError(f"ref {path.stem}: written for another key ({_excerpt(data.get('key'))})")
        return descriptor

    def put_ref(self, key: str, descriptor: Descriptor) -> None:
        path = self._ref_path(key)
        path.parent.mkdir(exist_ok=True)
        self._write_atomic(path, canonical_json({**asdict(descriptor), "key": key}))

    def touch_ref(self, key: str) -> None:
        """Mark ``key``'s ref as used now (a build found it up to date): `gc` spares the blobs
        of refs that a running build wrote or touched (`dream.store.running`)."""
        try:
            os.utime(self._ref_path(key))
        except OSError:
            pass  # a read-only store: nothing to protect there, the build goes on

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
        """index.json, checked: an object whose ``manifests`` are descriptors (FileNotFoundError
        if there is none; any other damage is one line saying how to recover)."""
        path = self.root / "index.json"
        try:
            index = json.loads(path.read_bytes())
            if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
                raise DreamError("no list of manifests")
            for entry in index["manifests"]:
                Descriptor.from_json(entry)
                if not isinstance(entry.get("annotations", {}).get(REF_NAME, ""), str):
                    raise DreamError(f"{REF_NAME} is not a string")
        except FileNotFoundError:
            raise
        except (OSError, ValueError, RecursionError, DreamError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "empty"
            raise DreamError(f"{path}: not an OCI image index ({reason}); run `doit verify --repair` "
                             "to set it aside (each `doit build:<image>` then tags its image again)") from None
        return index

    def tagged(self, name: str) -> Descriptor | None:
        """The manifest descriptor tagged ``name`` in index.json; None also when that manifest
        or its config is missing or corrupt here (so a build counts as not done and writes them
        again; layers are the refs' business)."""
        for entry in self.index()["manifests"]:
            if entry.get("annotations", {}).get(REF_NAME) == name:
                descriptor = Descriptor.from_json(entry)
                return descriptor if self._whole(descriptor) else None
        return None

    def _whole(self, manifest: Descriptor) -> bool:
        if not self.has_blob(manifest.digest, manifest.size):
            return False
        if not manifest.mediaType.endswith(".manifest.v1+json") and not manifest.mediaType.endswith(".manifest.v2+json"):
            return True  # an image index (not written by dream): its parts are verify's business
        try:
            config = Descriptor.from_json(self.read_manifest(manifest.digest).get("config"))
        except DreamError:
            return False
        return self.has_blob(config.digest, config.size)

    def tag(self, name: str, manifest: Descriptor) -> None:
        """Point ``name`` at ``manifest`` (replacing an older entry of that name)."""
        entry = manifest.oci()
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: name}
        with self.lock("index"):
            index = self.index()
            for old in index["manifests"]:
                if old.get("annotations", {}).get(REF_NAME) == name and old.get("digest") != manifest.digest:
                    self._remember_previous(name, old)
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
            for old in index["manifests"]:
                if old not in kept:
                    self._remember_previous(name, old)
            index["manifests"] = kept
            self._write_index(index)
            return True

    # -- the previous image of a tag (what `doit inspect` compares with) -------------------
    def _previous_path(self, name: str) -> Path:
        return self.meta / "previous" / f"{quote(name, safe='')}.json"

    def _remember_previous(self, name: str, entry: dict[str, Any]) -> None:
        """Keep the manifest (and config) that ``name`` pointed at before it moves or goes, in
        ``dream/previous/<name>.json``: their bodies, not only the digest, because no tag keeps
        those blobs from `gc`. Only a comparison is lost when this fails, never the tag."""
        record: dict[str, Any] = {"name": name, "manifest": {k: entry[k] for k in ("mediaType", "digest", "size")
                                                             if k in entry}}
        try:
            body = self.read_json(entry["digest"])
            record["body"] = body
            record["config"] = self.read_json(body["config"]["digest"])
        except (DreamError, KeyError, TypeError):
            pass  # a manifest or config gone already: its digest is all there is to compare
        with contextlib.suppress(OSError, DreamError):
            self._previous_path(name).parent.mkdir(parents=True, exist_ok=True)
            self._write_atomic(self._previous_path(name), canonical_json(record))

    def previous(self, name: str) -> dict[str, Any] | None:
        """What `_remember_previous` kept for ``name`` (keys ``manifest``, ``body``, ``config``), or None."""
        try:
            record = json.loads(self._previous_path(name).read_bytes())
        except (OSError, ValueError, RecursionError):
            return None
        return record if isinstance(record, dict) else None

    def _write_index(self, index: dict[str, Any]) -> None:
        self._write_atomic(self.root / "index.json", json.dumps(index, indent=2, sort_keys=True).encode() + b"\n")

    # -- helpers --------------------------------------------------------------------------
    def temporary(self, prefix: str) -> tuple[int, str]:
        """A new file in ``dream/tmp`` (mode 0644): its descriptor and name; one line if it
        cannot be made (``dream/tmp`` replaced by a file, unwritable, …)."""
        try:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=prefix)
        except OSError as exc:
            hint = "; remove it, or run `doit verify --repair`" if self.tmp_dir.is_file() else ""
            raise DreamError(f"{self.tmp_dir}: cannot write a temporary file: {exc.strerror or exc}{hint}") from None
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide blobs from other users' tools
        return fd, name

    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, name = self.temporary("meta-")
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


def open_store(root: Path | None = None, fetch: BlobFetch | None = None) -> Store:
    """The store at ``root`` (default: `store_path`), created if missing.

    A path that cannot be a store (a file, an unwritable directory) is one line naming the
    setting, not the traceback of the first mkdir that failed.
    """
    from dream.workdirs import check_directory, label
    path = root or store_path()
    check_directory("DREAM_STORE", path)
    try:
        return Store(path, fetch).init()
    except OSError as exc:
        raise DreamError(f"{label('DREAM_STORE', path)}: cannot set up the store: {exc.strerror or exc}") from None
