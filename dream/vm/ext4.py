"""A `Tree` as an ext4 image, byte for byte the same at every build, without mounting anything.

``mke2fs -d DIR`` copies a directory into a new file system in user space (no loop device, no
mount, no root). The directory is the tree written out (`materialize`); what mke2fs would take
from the build machine instead of the tree is pinned:

- the file system's features, block and inode sizes: our own mke2fs.conf (``MKE2FS_CONFIG``),
  not the machine's /etc/mke2fs.conf;
- the UUID and the directory hash seed: ``-U`` and ``-E hash_seed=`` from the disk's key;
- mke2fs's clock (creation, write and check times, each inode's crtime):
  ``E2FSPROGS_FAKE_TIME`` (it must not be 0: 0 means "unset");
- inode order: mke2fs -d reads each directory sorted by name (alphasort), so the same tree gives
  the same inode numbers whatever order the build wrote it in;
- what mke2fs copies from each source file that the tree does not say (its ctime, atime and the
  nanoseconds) is reset afterwards with ``debugfs -w`` on every inode in use (read from the
  inode bitmaps, `used_inodes`); mtimes are the tree's one fixed time (``mtime``);
- ownership, device nodes and modes a non-root build cannot give a file on disk are set by the
  same debugfs run (as root, `materialize` sets them on disk and there is nothing to fix).

Zeroed, not lazy: inode tables and the journal are written at mkfs time (``lazy_itable_init=0``,
``lazy_journal_init=0``, ``nodiscard``), so no byte is left to the host file's previous content.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from dream.errors import DreamError
from dream.oci.tree import BLOCK, CHAR, DIR, FIFO, FILE, HARDLINK, SYMLINK, Entry, Tree

MKE2FS_CONF = """\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
"""
JOURNAL_MB = 16
FIRST_INODE = 11  # lost+found; inodes 1-10 are reserved and 2 is the root directory


@dataclass
class Fixes:
    """What the directory on disk could not say, to be set with debugfs (paths absolute)."""

    owners: list[tuple[str, int, int]] = field(default_factory=list)
    modes: list[tuple[str, int]] = field(default_factory=list)
    nodes: list[tuple[str, str, int, int, int, int, int]] = field(default_factory=list)  # path, kind, major, minor, mode, uid, gid
    all_root: bool = False  # every inode root-owned first (a non-root build wrote them all as itself)


def _parent_symlink(path: str, symlinks: set[str]) -> str | None:
    parts = path.split("/")
    for end in range(1, len(parts)):
        prefix = "/".join(parts[:end])
        if prefix in symlinks:
            return prefix
    return None


def materialize(tree: Tree, root: Path, mtime: int) -> Fixes:
    """Write ``tree`` below the empty directory ``root``; what could not be written as the
    tree says (owners, device nodes, modes without owner access) comes back as `Fixes`."""
    privileged = os.geteuid() == 0
    fixes = Fixes(all_root=not privileged)
    entries = tree.sorted_entries()
    symlinks = {e.path for e in entries if e.kind == SYMLINK}
    directories: list[Entry] = []
    for entry in entries:
        through = _parent_symlink(entry.path, symlinks)
        if through is not None:
            raise DreamError(f"/{entry.path} lies below the symlink /{through}: the VM's root cannot hold both")
        target = root / entry.path
        if entry.kind == DIR:
            target.mkdir(mode=0o700)
            directories.append(entry)
        elif entry.kind == FILE:
            if entry.data is not None:
                target.write_bytes(entry.data)
            elif entry.source is not None:
                if entry.member:
                    raise DreamError(f"/{entry.path}: a file inside an archive cannot be written to the VM's disk")
                shutil.copyfile(entry.source, target)
            else:
                target.write_bytes(b"")
            _file_mode(target, entry, privileged, fixes)
        elif entry.kind == HARDLINK:
            os.link(root / entry.link, target)
        elif entry.kind == SYMLINK:
            os.symlink(entry.link, target)
        elif entry.kind == FIFO:
            os.mkfifo(target, entry.mode & 0o7777)
            os.chmod(target, entry.mode & 0o7777)
        elif entry.kind in (CHAR, BLOCK):
            if privileged:
                kind = stat.S_IFCHR if entry.kind == CHAR else stat.S_IFBLK
                os.mknod(target, kind | (entry.mode & 0o7777), os.makedev(entry.devmajor, entry.devminor))
                os.chmod(target, entry.mode & 0o7777)
            else:
                fixes.nodes.append(("/" + entry.path, "c" if entry.kind == CHAR else "b", entry.devmajor,
                                    entry.devminor, entry.mode & 0o7777, entry.uid, entry.gid))
                continue
        if entry.kind != HARDLINK:
            _owner(target, entry, privileged, fixes)
            for name, value in entry.xattrs:
                try:
                    os.setxattr(target, name, value, follow_symlinks=False)
                except OSError as exc:
                    raise DreamError(f"/{entry.path}: cannot set its extended attribute {name} "
                                     f"({exc.strerror}); build as root") from None
            if entry.kind != DIR:
                os.utime(target, (mtime, mtime), follow_symlinks=False)
    for entry in reversed(directories):  # children first: writing into a directory moves its mtime
        target = root / entry.path
        mode = entry.mode & 0o7777
        if not privileged and mode & 0o700 != 0o700:
            fixes.modes.append(("/" + entry.path, stat.S_IFDIR | mode))
            mode |= 0o700
        os.chmod(target, mode)
        os.utime(target, (mtime, mtime))
    os.chmod(root, 0o755)
    os.utime(root, (mtime, mtime))
    return fixes


def normalize_times(root: Path, mtime: int) -> None:
    """Every path below ``root`` (and ``root``) at ``mtime``: files that programs of the root
    wrote after `materialize` (depmod's indexes, Python's bytecode) and their folders too."""
    for folder, directories, files in os.walk(root, topdown=False):
        for name in files + directories:
            os.utime(os.path.join(folder, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def _file_mode(target: Path, entry: Entry, privileged: bool, fixes: Fixes) -> None:
    mode = entry.mode & 0o7777
    if not privileged and not mode & 0o400:  # mke2fs must read it
        fixes.modes.append(("/" + entry.path, stat.S_IFREG | mode))
        mode |= 0o400
    os.chmod(target, mode)


def _owner(target: Path, entry: Entry, privileged: bool, fixes: Fixes) -> None:
    if privileged:
        if (entry.uid, entry.gid) != (0, 0):
            os.lchown(target, entry.uid, entry.gid)
    elif (entry.uid, entry.gid) != (0, 0):
        fixes.owners.append(("/" + entry.path, entry.uid, entry.gid))


def disk_uuid(key: str, purpose: str) -> str:
    """A UUID derived from the disk's key: the same inputs, the same UUID and hash seed."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dream-vm:{purpose}:{key}"))


def _quoted(path: str) -> str:
    if '"' in path or "\n" in path or "\\" in path:
        raise DreamError(f"{path!r}: debugfs cannot name a path with quotes, backslashes or newlines")
    return f'"{path}"'


def _tools() -> tuple[str, str, str]:
    found = [shutil.which(tool) or shutil.which(f"/sbin/{tool}") for tool in ("mke2fs", "debugfs", "dumpe2fs")]
    if not all(found):
        raise DreamError("mke2fs, debugfs and dumpe2fs are needed to write the VM's disk (apt-get install e2fsprogs)")
    return found[0], found[1], found[2]  # type: ignore[return-value]


def used_inodes(dumpe2fs_output: str, inodes_per_group: int, groups: int) -> list[int]:
    """The inode numbers in use, from dumpe2fs's per-group ``Free inodes:`` ranges."""
    free: set[int] = set()
    for line in dumpe2fs_output.splitlines():
        line = line.strip()
        if line.startswith("Free inodes:"):
            for part in line[len("Free inodes:"):].split(","):
                part = part.strip()
                if not part:
                    continue
                first, _, last = part.partition("-")
                free.update(range(int(first), int(last or first) + 1))
    return [n for n in range(1, inodes_per_group * groups + 1) if n not in free]


def _superblock_number(text: str, field_name: str) -> int:
    match = re.search(rf"^{re.escape(field_name)}:\s+(\d+)", text, re.M)
    if match is None:
        raise DreamError(f"dumpe2fs printed no {field_name!r}")
    return int(match.group(1))


def owner_script(fixes: Fixes, inodes: list[int]) -> list[str]:
    """debugfs commands for what the directory could not hold: every inode made root's (a
    non-root build), the device nodes, then each owner and mode the tree gives."""
    commands: list[str] = []
    if fixes.all_root:
        for ino in inodes:
            if ino == 2 or ino > FIRST_INODE:
                commands += [f"sif <{ino}> uid 0", f"sif <{ino}> gid 0"]
    for path, kind, major, minor, mode, uid, gid in fixes.nodes:
        quoted = _quoted(path)
        bits = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
        folder, name = os.path.split(path)  # debugfs links a new node into its cwd only
        commands += [f"cd {_quoted(folder or '/')}", f"mknod {_quoted(name)} {kind} {major} {minor}", "cd /",
                     f"sif {quoted} mode 0{bits | mode:o}", f"sif {quoted} uid {uid}", f"sif {quoted} gid {gid}"]
    for path, uid, gid in fixes.owners:
        commands += [f"sif {_quoted(path)} uid {uid}", f"sif {_quoted(path)} gid {gid}"]
    for path, mode in fixes.modes:
        commands.append(f"sif {_quoted(path)} mode 0{mode:o}")
    return commands


def time_script(inodes: list[int], now: int, mtime: int | None = None) -> list[str]:
    """debugfs commands giving every used inode (the root, lost+found and the files) the
    build's times, nanoseconds 0: what mke2fs copied from the source files goes."""
    times = [("ctime", now), ("atime", now), ("crtime", now), ("ctime_extra", 0), ("atime_extra", 0),
             ("mtime_extra", 0), ("crtime_extra", 0)] + ([("mtime", mtime)] if mtime is not None else [])
    return [f"sif <{ino}> {name} {value}" for ino in inodes if ino == 2 or ino >= FIRST_INODE
            for name, value in times]


def _run(command: list[str], env: dict[str, str], what: str) -> str:
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise DreamError(f"{what} failed: {(run.stderr or run.stdout).strip()[-400:]}")
    return run.stdout


def make_ext4(source: Path, image: Path, size: int, key: str, label: str, fixes: Fixes, now: int) -> None:
    """``image`` (``size`` bytes, sparse) holding the directory ``source`` as ext4."""
    mke2fs, debugfs, dumpe2fs = _tools()
    now = max(now, 1)
    with tempfile.TemporaryDirectory(prefix="dream-ext4-") as scratch:
        conf = Path(scratch) / "mke2fs.conf"
        conf.write_text(MKE2FS_CONF)
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C",
               "MKE2FS_CONFIG": str(conf), "E2FSPROGS_FAKE_TIME": str(now), "TZ": "UTC"}
        image.unlink(missing_ok=True)
        with open(image, "wb") as handle:
            handle.truncate(size)
        _run([mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0", "-J", f"size={JOURNAL_MB}",
              "-L", label, "-U", disk_uuid(key, "uuid"),
              "-E", f"hash_seed={disk_uuid(key, 'hash_seed')},lazy_itable_init=0,lazy_journal_init=0,nodiscard,root_owner=0:0",
              "-d", str(source), str(image)], env, "mke2fs -d")
        summary = _run([dumpe2fs, "-h", str(image)], env, "dumpe2fs")
        per_group = _superblock_number(summary, "Inodes per group")
        groups = _superblock_number(summary, "Inode count") // per_group

        def used() -> list[int]:
            return used_inodes(_run([dumpe2fs, str(image)], env, "dumpe2fs"), per_group, groups)

        inodes = used()
        fixing = owner_script(fixes, inodes)
        if fixes.nodes:  # new inodes: their times once they exist
            _debugfs(debugfs, image, fixing, env, scratch)
            fixing, inodes = [], used()
        _debugfs(debugfs, image, fixing + time_script(inodes, now), env, scratch)


def _debugfs(debugfs: str, image: Path, commands: list[str], env: dict[str, str], scratch: str) -> None:
    if not commands:
        return
    script = Path(scratch) / "debugfs.cmds"
    script.write_text("".join(c + "\n" for c in commands))
    run = subprocess.run([debugfs, "-w", "-f", str(script), str(image)], capture_output=True, text=True, env=env)
    problems = [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("debugfs ")]
    if run.returncode != 0 or problems:
        raise DreamError(f"debugfs on the VM's disk failed: {' '.join(problems)[-400:] or run.returncode}")
