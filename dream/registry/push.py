"""Pushing an image from the store: blobs first (skip, mount or stream), then the manifest.

Every digest is known before anything is sent, so a push needs no local record of what was
pushed before: each blob is asked for with HEAD and skipped when the registry has it. A blob
that the store knows to be in another repository of the same registry is mounted from there
(no bytes move); anything else is streamed from the store in 1 MiB pieces. The manifest goes up
as the stored bytes, under each tag, so the registry's digest is the store's digest.
"""

from __future__ import annotations

from dataclasses import dataclass

from dream.oci.descriptor import Descriptor
from dream.oci.reference import Reference, parse_reference
from dream.progress import bar
from dream.registry.client import RegistryClient, client_for
from dream.store.layout import Store


@dataclass
class PushReport:
    """What one push did, blob by blob, for the summary line and the tests."""

    target: str
    digest: str
    uploaded: int = 0
    uploaded_bytes: int = 0
    mounted: int = 0
    present: int = 0

    def __str__(self) -> str:
        return (f"pushed {self.target}@{self.digest}: {self.uploaded} blobs uploaded "
                f"({self.uploaded_bytes:,} bytes), {self.mounted} mounted, {self.present} already there")


def push_blob(store: Store, client: RegistryClient, repository: str, descriptor: Descriptor,
              report: PushReport) -> None:
    """Make ``repository`` hold ``descriptor``'s blob by the cheapest way available."""
    location = f"{client.host}/{repository}"
    if client.has_blob(repository, descriptor.digest):
        report.present += 1
    else:
        others = [parse_reference(source, "blob source") for source in store.sources(descriptor.digest)]
        mount_from = next((o.repository for o in others
                           if o.host == client.host and o.repository != repository), None)
        upload = client.start_upload(repository, descriptor.digest, mount_from=mount_from)
        if upload is None:
            report.mounted += 1
        else:  # not mounted (or nothing to mount from): the 202 opened an upload session
            path = store.local_blob(descriptor)  # verified (or fetched, verified) before it is sent
            with bar(f"push {descriptor.digest[7:19]}", descriptor.size) as advance:
                client.upload(upload, descriptor.digest, path, advance)
            report.uploaded += 1
            report.uploaded_bytes += descriptor.size
    store.add_source(descriptor.digest, location)


def push_image(store: Store, manifest: Descriptor, target: Reference, tags: list[str]) -> PushReport:
    """Push the image whose manifest is ``manifest`` to ``target`` under every tag in ``tags``
    (by digest alone when there are none)."""
    client = client_for(target.host)
    report = PushReport(target.name, manifest.digest)
    body = store.read_manifest(manifest.digest)  # hashed as it is read, like the manifest sent
    for blob in [body["config"], *body["layers"]]:
        push_blob(store, client, target.repository, Descriptor.from_json(blob), report)
    data = store.read_blob(manifest.digest)
    for reference in tags or [manifest.digest]:
        client.put_manifest(target.repository, reference, data, manifest.mediaType)
    store.add_source(manifest.digest, f"{client.host}/{target.repository}")  # `repo@digest` from now on
    return report


@dataclass(frozen=True)
class RegistryPublisher:
    """A registry repository as a `dream.managers.base.Publisher`: ``push:<image>`` publishes
    there (the blobs the store holds only by their sources must be fetchable: a store opened
    with its ``fetch`` hook)."""

    target: Reference

    def publish(self, store: Store, manifest: Descriptor, tags: list[str]) -> str:
        return str(push_image(store, manifest, self.target, tags))
