"""What maintainer scripts would have done, done declaratively on the unpacked tree.

dream never runs a package's scripts (they would need the target system running). A working
system still needs: accounts (base-passwd), the dynamic linker cache, a CA bundle, the
alternatives symlinks (`awk` …), and a dpkg database so that `dpkg -l` and apt work inside.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dream.errors import DreamError
from dream.oci.tree import DIR, FILE, HARDLINK, SYMLINK, Entry, Tree

if TYPE_CHECKING:  # the unpacker (tarfile, lzma, a thread pool) is imported only by a build
    from dream.debian.unpack import Unpacked

FIXUPS_VERSION = "6"
_ALTERNATIVE = re.compile(r"update-alternatives\s+--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)((?:\s+--slave\s+\S+\s+\S+\s+\S+)*)")
_SLAVE = re.compile(r"--slave\s+(\S+)\s+(\S+)\s+(\S+)")


def apply_fixups(unpacked: Unpacked, architecture: str) -> None:
    """Run every fix-up in a fixed order (the order is part of the layer's bytes)."""
    tree = unpacked.tree
    accounts(tree)
    base_files(tree, unpacked.postinst.get("base-files") or "")
    alternatives(tree, unpacked.postinst)
    ca_bundle(tree)
    pam_common(tree)
    dpkg_database(tree, unpacked)
    ld_cache(tree, unpacked.staging, architecture)


def accounts(tree: Tree) -> None:
    """/etc/passwd, group, shadow and gshadow from base-passwd's masters (its postinst's job)."""
    masters = {"passwd": tree.get("usr/share/base-passwd/passwd.master"),
               "group": tree.get("usr/share/base-passwd/group.master")}
    group_master = masters["group"]
    shadow_gid = _group_id(_read(group_master) if group_master else b"", b"shadow")
    for name, entry in masters.items():
        if entry is None or tree.get(f"etc/{name}") is not None:
            continue
        # Passwords live in the shadow files, as after base-passwd's own `update-passwd`.
        text = b"".join(_shadowed(line) + b"\n" for line in _read(entry).splitlines() if line)
        tree.add_bytes(f"etc/{name}", text, 0o644)
        shadow = "shadow" if name == "passwd" else "gshadow"
        lines = [line.split(b":")[0] for line in text.splitlines() if line]
        if name == "passwd":
            body = b"".join(user + b":*:0:0:99999:7:::\n" for user in lines)
        else:
            body = b"".join(group + b":*::\n" for group in lines)
        tree.add_bytes(f"etc/{shadow}", body, 0o640, 0, shadow_gid)


_FROM_DEFAULT = re.compile(r"^\s*install_from_default\s+(\S+)\s+/(\S+)\s*$", re.M)
_DIRECTORY = re.compile(r"^\s*install_directory\s+(\S+)\s+([0-7]+)\s+(\S+)\s*$", re.M)


def base_files(tree: Tree, postinst: str) -> None:
    """What base-files' postinst installs on a first configure: /etc/profile (without it a
    login shell never reads /etc/profile.d), root's dotfiles, /etc/motd, and the top
    directories (/opt, /srv, /mnt, /var/mail …). Read from the postinst itself, so the list is
    the suite's own."""
    for source, target in _FROM_DEFAULT.findall(postinst):
        default = tree.get(f"usr/share/base-files/{source}")
        if default is not None and tree.get(target) is None:
            tree.add_bytes(target, _read(default), default.mode)
    group = tree.get("etc/group")
    for path, mode, owner in _DIRECTORY.findall(postinst):
        if tree.get(path) is None:
            gid = _group_id(_read(group), owner.encode()) if group is not None and owner != "root" else 0
            tree.add_dir(path, int(mode, 8), 0, gid)


PAM_TYPES = {"auth": "Auth", "account": "Account", "password": "Password", "session": "Session",
             "session-noninteractive": "Session"}


def pam_common(tree: Tree) -> None:
    """/etc/pam.d/common-* from the profiles in /usr/share/pam-configs (pam-auth-update's job,
    which libpam-runtime's postinst runs). Without them every PAM user (sudo, su, login, sshd)
    fails with "unable to initialize PAM". Profiles with ``Default: yes`` are enabled, by
    priority; a primary module that succeeds jumps over the rest of the primary block."""
    profiles = []
    for path in sorted(p for p in tree.entries if p.startswith("usr/share/pam-configs/")):
        fields = _pam_profile(_read(tree.entries[path]).decode())
        if fields.get("Default", "").lower() == "yes":
            profiles.append(fields)
    if not profiles:
        return
    profiles.sort(key=lambda f: -int(f.get("Priority", "0")))
    for name, field in PAM_TYPES.items():
        enabled = [f for f in profiles if field in f and not (
            name == "session-noninteractive" and f.get("Session-Interactive-Only", "").lower() == "yes")]
        primary = [line for f in enabled if f.get(f"{field}-Type") == "Primary" for line in f[field]]
        additional = [line for f in enabled if f.get(f"{field}-Type") == "Additional" for line in f[field]]
        kind = name.split("-")[0]
        lines = [f"# /etc/pam.d/common-{name}: written by dream from /usr/share/pam-configs"]
        for index, line in enumerate(primary):
            lines.append(f"{kind}\t" + line.replace("success=end", f"success={len(primary) - index}"))
        if not primary:
            lines.append(f"{kind}\t[default=1]\t\t\tpam_permit.so")
        lines += [f"{kind}\trequisite\t\t\tpam_deny.so", f"{kind}\trequired\t\t\tpam_permit.so"]
        lines += [f"{kind}\t{line}" for line in additional]
        tree.add_bytes(f"etc/pam.d/common-{name}", ("\n".join(lines) + "\n").encode())


def _pam_profile(text: str) -> dict[str, Any]:
    """A pam-configs profile: ``Field: value`` lines; indented lines are a field's module lines."""
    fields: dict[str, Any] = {}
    current = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and current:
            fields.setdefault(current, []).append(line.strip())
        elif ":" in line:
            current, _, value = line.partition(":")
            if value.strip():
                fields[current] = value.strip()
    return fields


def _shadowed(line: bytes) -> bytes:
    fields = line.split(b":")
    return b":".join([fields[0], b"x", *fields[2:]])


def alternatives(tree: Tree, postinst: dict[str, str]) -> None:
    """Apply `update-alternatives --install` lines with literal paths, highest priority wins."""
    best: dict[str, tuple[int, str, str, list[tuple[str, str, str]]]] = {}
    for package in sorted(postinst):
        script = postinst[package].replace("\\\n", " ")
        for match in _ALTERNATIVE.finditer(script):
            link, name, path, priority = match.group(1), match.group(2), match.group(3), int(match.group(4))
            if "$" in link + name + path or tree.get(path) is None:
                continue
            slaves = _SLAVE.findall(match.group(5) or "")
            if name not in best or priority > best[name][0]:
                best[name] = (priority, link, path, slaves)
    for name, (_, link, path, slaves) in sorted(best.items()):
        for alt_link, alt_name, alt_path in [(link, name, path), *slaves]:
            if "$" in alt_link + alt_path or tree.get(alt_path) is None or tree.get(alt_link) is not None:
                continue
            tree.add_symlink(f"etc/alternatives/{alt_name}", alt_path)
            tree.add_symlink(alt_link, f"/etc/alternatives/{alt_name}")


def ca_bundle(tree: Tree) -> None:
    """/etc/ssl/certs/ca-certificates.crt from /usr/share/ca-certificates (update-ca-certificates)."""
    prefix = "usr/share/ca-certificates/"
    certs = sorted(path for path, entry in tree.entries.items()
                   if path.startswith(prefix) and path.endswith(".crt") and entry.kind == FILE)
    if not certs:
        return
    bundle = b"".join(_read(tree.entries[path]).rstrip(b"\n") + b"\n" for path in certs)
    tree.add_bytes("etc/ssl/certs/ca-certificates.crt", bundle, 0o644)
    listing = "".join(path.removeprefix(prefix) + "\n" for path in certs).encode()
    tree.add_bytes("etc/ca-certificates.conf", listing, 0o644)
    links = {posixpath.basename(path)[:-4] + ".pem": "/" + path for path in certs}
    for name, target in links.items():
        tree.add_symlink(f"etc/ssl/certs/{name}", target)
    for hashed, name in _openssl_hashes(tree, links).items():
        tree.add_symlink(f"etc/ssl/certs/{hashed}", name)


def _openssl_hashes(tree: Tree, links: dict[str, str]) -> dict[str, str]:
    """Subject-hash links (``5ad8a5d6.0`` → ``Foo.pem``) as `openssl rehash` makes them.

    OpenSSL's default CA *directory* lookup (what Python's ssl module uses on Debian) needs them.
    """
    if shutil.which("openssl") is None:
        raise DreamError("openssl not found: it is needed to index the CA certificates")
    with tempfile.TemporaryDirectory() as scratch:
        for name, target in links.items():
            Path(scratch, name).write_bytes(_read(tree.entries[target.lstrip("/")]))
        run = subprocess.run(["openssl", "rehash", scratch], capture_output=True, text=True)
        if run.returncode != 0:
            raise DreamError(f"openssl rehash failed: {run.stderr.strip()}")
        return {p.name: os.readlink(p) for p in Path(scratch).iterdir() if p.is_symlink()}


def dpkg_database(tree: Tree, unpacked: Unpacked) -> None:
    """/var/lib/dpkg/status and info/*.list, so dpkg and apt inside the image know what is there."""
    stanzas = []
    for name in sorted(unpacked.control):
        control = unpacked.control[name].strip("\n")
        lines = control.splitlines()
        lines.insert(1, "Status: install ok installed")
        stanzas.append("\n".join(lines) + "\n")
        fields = dict(line.split(": ", 1) for line in lines if ": " in line and not line.startswith(" "))
        suffix = f":{fields.get('Architecture')}" if fields.get("Multi-Arch") == "same" else ""
        listing = "/.\n" + "".join(p + "\n" for p in unpacked.files[name])
        tree.add_bytes(f"var/lib/dpkg/info/{name}{suffix}.list", listing.encode(), 0o644)
    tree.add_bytes("var/lib/dpkg/status", "\n".join(stanzas).encode(), 0o644)
    for empty in ("var/lib/dpkg/available", "var/lib/dpkg/diversions", "var/lib/dpkg/statoverride"):
        if tree.get(empty) is None:
            tree.add_bytes(empty, b"", 0o644)
    for directory in ("var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/lib/apt/lists/partial",
                      "var/cache/apt/archives/partial"):
        tree.add_dir(directory)


HOST_ARCHITECTURE = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)  # platform.machine(), less its import
QEMU = {"amd64": "qemu-x86_64-static", "arm64": "qemu-aarch64-static"}


def ld_cache(tree: Tree, staging: Path, architecture: str) -> None:
    """/etc/ld.so.cache, built by ldconfig over a scratch copy of the libraries.

    ldconfig only reads the ld.so.conf files and the ELF headers of files named ``*.so*``, so
    the scratch root holds just those (written out, or hard-linked where unpacking staged
    them), the directories and the symlinks: not the thousands of other files under /usr/lib.
    ``-X`` keeps it from creating links of its own. The
    host's ldconfig skips libraries of another machine (an arm64 image got an empty cache),
    so for a foreign architecture the image's own ldconfig runs under qemu-user.
    """
    if tree.get("etc/ld.so.conf") is None:
        return
    with tempfile.TemporaryDirectory(dir=staging, prefix="ldroot-") as scratch:
        root = Path(scratch)
        for path, entry in tree.entries.items():
            libraries = path.startswith(("usr/lib", "usr/local/lib")) and (
                entry.kind not in (FILE, HARDLINK) or ".so" in posixpath.basename(path))
            if path.startswith("etc/ld.so.conf") or libraries:
                _copy_entry(tree, path, entry, root)
        for top in ("lib", "lib64"):
            if tree.get(top) is not None:
                os.symlink(f"usr/{top}", root / top)
        command = _ldconfig(tree, root, architecture) + ["-X", "-r", str(root)]
        if os.geteuid() != 0:
            command = ["unshare", "--map-root-user", "--"] + command  # ldconfig -r needs chroot()
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            raise DreamError(f"ldconfig failed building /etc/ld.so.cache: {run.stderr.strip()}")
        tree.add_bytes("etc/ld.so.cache", (root / "etc" / "ld.so.cache").read_bytes(), 0o644)


def _ldconfig(tree: Tree, root: Path, architecture: str) -> list[str]:
    """The host's ldconfig for the host's architecture, else the image's under qemu-user."""
    if architecture == HOST_ARCHITECTURE:
        if shutil.which("ldconfig") is None:
            raise DreamError("ldconfig not found: debian layers need glibc's ldconfig on the build machine")
        return ["ldconfig"]
    qemu = shutil.which(QEMU[architecture])
    if qemu is None:
        raise DreamError(f"an {architecture} image on this {os.uname().machine} machine needs "
                         f"{QEMU[architecture]} to write /etc/ld.so.cache (apt-get install qemu-user-static)")
    own = next((p for p in ("usr/sbin/ldconfig", "sbin/ldconfig") if tree.get(p) is not None), None)
    if own is None:
        raise DreamError(f"the {architecture} image has no ldconfig (libc-bin) to write /etc/ld.so.cache with")
    _copy_entry(tree, own, tree.entries[own], root)
    return [qemu, str(root / own)]


def _copy_entry(tree: Tree, path: str, entry: Any, root: Path) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == DIR:
        target.mkdir(exist_ok=True)
    elif entry.kind == SYMLINK:
        target.unlink(missing_ok=True)
        os.symlink(entry.link, target)
    elif entry.kind in (FILE, HARDLINK):
        source = tree.entries[entry.link] if entry.kind == HARDLINK else entry
        _materialize(source, target)
        if entry.mode & 0o111:
            target.chmod(0o755)


def _materialize(entry: Entry, target: Path) -> None:
    if entry.data is not None:
        target.write_bytes(entry.data)
        return
    assert entry.source is not None  # a file entry has its bytes or where they are
    try:
        os.link(entry.source, target)
    except OSError:
        shutil.copyfile(entry.source, target)


def _read(entry: Entry) -> bytes:
    if entry.data is not None:
        return entry.data
    assert entry.source is not None  # a file entry has its bytes or where they are
    return Path(entry.source).read_bytes()


def _group_id(group_file: bytes, name: bytes) -> int:
    for line in group_file.splitlines():
        parts = line.split(b":")
        if parts[0] == name and len(parts) > 2 and parts[2].isdigit():
            return int(parts[2])
    return 42  # Debian's fixed gid for `shadow` (base-passwd)
