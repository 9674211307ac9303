"""Install wheels into a layer's `Tree` without writing them to disk.

`installer` decides what a wheel installs and where (schemes, ``.data`` directories, console
scripts with the image's interpreter in the shebang, RECORD, INSTALLER); only its destination is
ours. A wheel member becomes a tree entry that names the wheel and the member
(`Entry.member`), and the tar reads its bytes straight from the zip while it streams the layer:
nothing is unzipped to a scratch directory and read back, which for the 581 MB cuBLAS wheel was
most of its layer's build time. Generated files (scripts, RECORD, INSTALLER) are small and kept
as bytes.

The RECORD that lands in the image lists the hash of every member as the wheel's own RECORD
gives it, so no member is read here; the tar checks each member's bytes against that hash as it
streams them (`dream.oci.tar`), so a wheel whose RECORD lies stops the layer instead of landing
with a wrong RECORD. Paths another layer already provides (the lock's ``drop``) are left out of
the tree but stay in the RECORD, as they did when the wheel was unpacked to disk and the file
deleted afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
import zipfile
from pathlib import Path
from typing import BinaryIO

from installer import install
from installer.destinations import SchemeDictionaryDestination
from installer.records import Hash, RecordEntry, parse_record_file
from installer.sources import WheelFile
from installer.utils import Scheme

from dream.errors import DreamError
from dream.oci.tree import FILE, Entry, Tree
from dream.python.bytecode import Module
from dream.python.resolve import Wheel
from dream.python.target import PythonTarget

INSTALLER_NAME = b"dream\n"


def install_into(tree: Tree, path: Path, wheel: Wheel, target: PythonTarget) -> list[Module]:
    """Add what installing the wheel file ``path`` into the image puts on its disk to ``tree``;
    return the modules it installs into site-packages (to compile, `dream.python.bytecode`)."""
    try:
        with zipfile.ZipFile(path) as archive:  # one read of the central directory for both
            source = WheelFile(archive)
            destination = TreeDestination(tree, path, wheel, _known_members(source, archive), target)
            install(source, destination, additional_metadata={"INSTALLER": INSTALLER_NAME})
    except (ValueError, KeyError, zipfile.BadZipFile, RuntimeError, NotImplementedError) as exc:
        # installer's "bad wheel" errors; zipfile's for an encrypted member or an unknown method
        raise DreamError(f"cannot install {wheel.filename}: {exc}") from None
    return destination.modules


def _known_members(source: WheelFile, archive: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
    """member name → (hex sha256, size) for the members whose RECORD row has a sha256 and
    whose size in the zip is the size RECORD gives (the zip's own size is what is read)."""
    sizes = {info.filename: info.file_size for info in archive.infolist()}
    out = {}
    for name, hash_text, size in parse_record_file(source.read_dist_info("RECORD").splitlines()):
        algorithm, _, value = hash_text.partition("=")
        if algorithm == "sha256" and value and size and sizes.get(name) == int(size):
            out[name] = (base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex(), int(size))
    return out


class TreeDestination(SchemeDictionaryDestination):
    """installer's destination with the tree as the disk: `write_to_fs` is its one write."""

    def __init__(self, tree: Tree, wheel_path: Path, wheel: Wheel,
                 known: dict[str, tuple[str, int]], target: PythonTarget) -> None:
        scheme = target.scheme()
        # headers go to include/pythonX.Y/<distribution>/, as pip puts them (and as
        # `dream.python.wheels.install_paths` expects when it computes a lock's ``drop``)
        scheme["headers"] = f"{scheme['headers']}/{wheel.filename.split('-', 1)[0]}"
        super().__init__(scheme, interpreter=target.interpreter, script_kind="posix",
                         bytecode_optimization_levels=())
        self.tree, self.wheel_path, self.wheel, self.known = tree, wheel_path, wheel, known
        self.dropped = set(wheel.drop)
        self.modules: list[Module] = []

    def write_to_fs(self, scheme: Scheme, path: str, stream: BinaryIO, is_executable: bool) -> RecordEntry:
        base = self.scheme_dict[scheme].strip("/")
        image_path = posixpath.normpath(posixpath.join(base, path))
        if not image_path.startswith(base + "/"):
            raise DreamError(f"{self.wheel.filename} installs {path} outside /{base}")
        mode = 0o755 if is_executable else 0o644
        member = stream.name if isinstance(stream, zipfile.ZipExtFile) else ""
        if member in self.known:
            sha256, size = self.known[member]
            entry = Entry(image_path, FILE, mode, size=size, source=self.wheel_path,
                          member=member, sha256=sha256)
        else:  # generated (a script, RECORD) or a member its RECORD does not describe: read it
            data = stream.read()
            sha256, size = hashlib.sha256(data).hexdigest(), len(data)
            entry = Entry(image_path, FILE, mode, size=size, data=data)
        if image_path in self.dropped:
            self.tree.add_dir(posixpath.dirname(image_path))  # unpacking to disk left it there
        elif self.tree.get(image_path) is not None:
            raise DreamError(f"{self.wheel.filename} and another wheel of the same layer both "
                             f"install /{image_path}; run `doit lock` again")
        else:
            self.tree.add(entry)
            if member and scheme in ("purelib", "platlib") and image_path.endswith(".py"):
                self.modules.append(Module(image_path, self.wheel_path, member))
        digest = base64.urlsafe_b64encode(bytes.fromhex(sha256)).decode().rstrip("=")
        return RecordEntry(path, Hash("sha256", digest), size)

    def write_script(self, name: str, module: str, attr: str, section: str) -> RecordEntry:
        """installer's own, less its chmod of the file it wrote (it wrote none); scripts are
        executable by everyone (0755), as the chmod would leave them."""
        from installer.scripts import Script
        script_name, data = Script(name, module, attr, section).generate(  # type: ignore[arg-type]
            self.interpreter, self.script_kind)
        with io.BytesIO(data) as stream:
            return self.write_to_fs(Scheme("scripts"), script_name, stream, is_executable=True)
