"""What a VM's root needs beyond the image's files: the fix-ups the packages' maintainer scripts
would have done for systemd, udev, dbus and kmod, the configuration of a small QEMU guest, and
the deployment's units wired in. Pure functions on a `Tree` (no file is read or written here).

Maintainer scripts, done declaratively (dream runs none, dream/debian/fixups.py):

- systemd: ``systemd-sysusers basic.conf systemd-journal.conf systemd-network.conf`` (here: every
  ``usr/lib/sysusers.d`` file, `sysusers`), ``systemd-machine-id-setup`` → an *empty*
  ``/etc/machine-id`` instead, so that each boot of the image is a first boot with an id of its
  own (and the disk's bytes hold no id); ``enable getty@tty1`` is not done (no screen);
- udev: ``addgroup --system input sgx kvm render``; its ``systemd-hwdb update`` is not done
  (udev runs without a hwdb.bin; no rule of a small VM needs one);
- dbus: the messagebus account (sysusers' dbus.conf) and its statoverride of the launch helper
  (root:messagebus 4754, recorded in /var/lib/dpkg/statoverride);
- kmod: an empty /etc/modules. The kernel's depmod runs at build time (dream/vm/modules.py).

The guest: multi-user.target as the default, systemd-firstboot and the serial getty masked (the
first would prompt on the console, the second gives a login nobody can use: root is locked),
an fstab (root on /dev/vda, the data disk by label), systemd-networkd with the static address
of QEMU's user-mode network (no DHCP wait), resolv.conf pointing at QEMU's DNS, the journal
forwarded to the serial console (so the host streams every service's output), a hostname.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from dream.errors import DreamError
from dream.oci.tree import FILE, Entry, Tree

UNITS = "etc/systemd/system"
SYSTEM = "/lib/systemd/system"
DATA_MOUNT = "/var/lib/dream/data"
ROOTFS = "rootfs/"  # a file of `install_deployment` that goes at its own path below /
DATA_LABEL = "dream-data"
ROOT_DEVICE = "/dev/vda"
GUEST_ADDRESS = "10.0.2.15"  # QEMU user-mode networking: the guest, the gateway, the DNS
GATEWAY = "10.0.2.2"
DNS = "10.0.2.3"
READY = "dream-vm: ready"
UDEV_GROUPS = ("input", "sgx", "kvm", "render")
SYSTEM_ID_MAX = 999
NOLOGIN = "/usr/sbin/nologin"


def read_text(tree: Tree, path: str) -> str:
    entry = tree.get(path)
    if entry is None or entry.kind != FILE:
        return ""
    if entry.data is not None:
        return entry.data.decode()
    assert entry.source is not None
    return entry.source.read_text()


def write_text(tree: Tree, path: str, text: str, mode: int | None = None, uid: int = 0, gid: int = 0) -> None:
    old = tree.get(path)
    tree.add_bytes(path, text.encode(), mode if mode is not None else (old.mode if old else 0o644), uid, gid)


# -- accounts: systemd-sysusers ------------------------------------------------------------

@dataclass(frozen=True)
class SysUser:
    """One sysusers.d line of the kinds a Debian system ships: ``u``, ``g`` or ``m``."""

    kind: str
    name: str
    id: str = "-"
    gecos: str = ""
    home: str = "-"
    shell: str = "-"


def parse_sysusers(text: str) -> list[SysUser]:
    """The ``u``/``g``/``m`` lines of a sysusers.d file (``r`` ranges and comments skipped)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = shlex.split(line)
        kind = fields[0].rstrip("!")
        if kind not in ("u", "g", "m") or len(fields) < 2:
            continue
        fields += ["-"] * (6 - len(fields))
        gecos = "" if fields[3] == "-" else fields[3]
        found.append(SysUser(kind, fields[1], fields[2], gecos, fields[4], fields[5]))
    return found


class _Accounts:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.files = {name: [line.split(":") for line in read_text(tree, f"etc/{name}").splitlines() if line]
                      for name in ("passwd", "group", "shadow", "gshadow")}

    def user(self, name: str) -> list[str] | None:
        return next((f for f in self.files["passwd"] if f[0] == name), None)

    def group(self, name: str) -> list[str] | None:
        return next((f for f in self.files["group"] if f[0] == name), None)

    def uids(self) -> set[int]:
        return {int(f[2]) for f in self.files["passwd"] if len(f) > 2 and f[2].isdigit()}

    def gids(self) -> set[int]:
        return {int(f[2]) for f in self.files["group"] if len(f) > 2 and f[2].isdigit()}

    def free(self, taken: set[int]) -> int:
        for candidate in range(SYSTEM_ID_MAX, 0, -1):
            if candidate not in taken:
                return candidate
        raise DreamError("no free system user or group id below 1000")

    def add_group(self, name: str, wanted: int | None) -> int:
        gids = self.gids()
        gid = wanted if wanted is not None and wanted not in gids else self.free(gids)
        self.files["group"].append([name, "x", str(gid), ""])
        self.files["gshadow"].append([name, "!*", "", ""])
        return gid

    def add_user(self, spec: SysUser) -> None:
        wanted_uid: int | None = None
        gid: int | None = None
        if ":" in spec.id:
            uid_text, group = spec.id.split(":", 1)
            wanted_uid = int(uid_text) if uid_text.isdigit() else None
            known = self.group(group) if not group.isdigit() else None
            gid = int(group) if group.isdigit() else int(known[2]) if known else None
        elif spec.id.isdigit():
            wanted_uid = int(spec.id)
        uids = self.uids()
        if wanted_uid is not None and wanted_uid in uids:
            wanted_uid = None
        if wanted_uid is None:  # the same number for the user and its group, as sysusers does
            wanted_uid = self.free(uids | (self.gids() if gid is None else set()))
        if gid is None:
            own = self.group(spec.name)
            gid = int(own[2]) if own else self.add_group(spec.name, wanted_uid)
        home = "/" if spec.home == "-" else spec.home
        shell = ("/bin/sh" if wanted_uid == 0 else NOLOGIN) if spec.shell == "-" else spec.shell
        self.files["passwd"].append([spec.name, "x", str(wanted_uid), str(gid), spec.gecos, home, shell])
        self.files["shadow"].append([spec.name, "!*", "", "", "", "", "", "", ""])

    def add_member(self, user: str, group: str) -> None:
        entry = self.group(group)
        if entry is None:
            self.add_group(group, None)
            entry = self.group(group)
        assert entry is not None
        members = [m for m in entry[3].split(",") if m] if len(entry) > 3 else []
        if user not in members:
            entry[3:] = [",".join(members + [user])]

    def write(self) -> None:
        modes = {"passwd": 0o644, "group": 0o644, "shadow": 0o640, "gshadow": 0o640}
        shadow = self.group("shadow")
        for name, rows in self.files.items():
            old = self.tree.get(f"etc/{name}")
            gid = old.gid if old else (int(shadow[2]) if shadow and name.endswith("shadow") else 0)
            write_text(self.tree, f"etc/{name}", "".join(":".join(r) + "\n" for r in rows),
                       old.mode if old else modes[name], 0, gid)


def sysusers(tree: Tree, extra: Sequence[SysUser] = ()) -> None:
    """The accounts the ``usr/lib/sysusers.d`` files (in name order) and ``extra`` declare and
    /etc/passwd and /etc/group lack; new ids are the highest free system ids (999 down)."""
    accounts = _Accounts(tree)
    specs: list[SysUser] = []
    for path in sorted(p for p in tree.entries if posixpath.dirname(p) == "usr/lib/sysusers.d" and p.endswith(".conf")):
        specs += parse_sysusers(read_text(tree, path))
    for spec in [*specs, *extra]:
        if spec.kind == "g" and accounts.group(spec.name) is None:
            accounts.add_group(spec.name, int(spec.id) if spec.id.isdigit() else None)
        elif spec.kind == "u" and accounts.user(spec.name) is None:
            accounts.add_user(spec)
        elif spec.kind == "m":
            accounts.add_member(spec.name, spec.id)
    accounts.write()


# -- dpkg: the VM's packages recorded beside the image's -------------------------------------

def merged_status(image_status: str, controls: Mapping[str, str]) -> str:
    """/var/lib/dpkg/status of the image with the VM's packages added (or replacing an older
    version of theirs), in name order like dream's own (dream/debian/fixups.py)."""
    stanzas: dict[str, str] = {}
    for stanza in image_status.split("\n\n"):
        stanza = stanza.strip("\n")
        if stanza.startswith("Package: "):
            stanzas[stanza.splitlines()[0][len("Package: "):]] = stanza
    for name, control in controls.items():
        lines = control.strip("\n").splitlines()
        lines.insert(1, "Status: install ok installed")
        stanzas[name] = "\n".join(lines)
    return "\n".join(stanzas[name] + "\n" for name in sorted(stanzas))


def dpkg_records(tree: Tree, image_status: str, controls: Mapping[str, str],
                 files: Mapping[str, list[str]]) -> None:
    write_text(tree, "var/lib/dpkg/status", merged_status(image_status, controls), 0o644)
    for name in sorted(controls):
        fields = dict(line.split(": ", 1) for line in controls[name].splitlines() if ": " in line and not line.startswith(" "))
        suffix = f":{fields.get('Architecture')}" if fields.get("Multi-Arch") == "same" else ""
        listing = "/.\n" + "".join(p + "\n" for p in files.get(name, []))
        tree.add_bytes(f"var/lib/dpkg/info/{name}{suffix}.list", listing.encode(), 0o644)


def statoverride(tree: Tree, user: str, group: str, mode: int, path: str) -> None:
    """``dpkg-statoverride --update --add``: the file's owner and mode, and the record of it."""
    entry = tree.get(path)
    if entry is None:
        return
    ids = {f.split(":")[0]: int(f.split(":")[2]) for f in read_text(tree, "etc/group").splitlines() if f.count(":") >= 2}
    users = {f.split(":")[0]: int(f.split(":")[2]) for f in read_text(tree, "etc/passwd").splitlines() if f.count(":") >= 2}
    tree.add(Entry(entry.path, entry.kind, mode, users.get(user, 0), ids.get(group, 0), entry.size, entry.link,
                   entry.source, entry.member, entry.data, xattrs=entry.xattrs))
    absolute = "/" + entry.path
    lines = [line for line in read_text(tree, "var/lib/dpkg/statoverride").splitlines()
             if not line.endswith(" " + absolute)]
    lines.append(f"{user} {group} {mode:o} {absolute}")
    write_text(tree, "var/lib/dpkg/statoverride", "".join(line + "\n" for line in sorted(lines)), 0o644)


def package_fixups(tree: Tree) -> None:
    """The maintainer scripts' work for systemd, udev, dbus and kmod (the module docstring)."""
    sysusers(tree, [SysUser("g", name) for name in UDEV_GROUPS])
    statoverride(tree, "root", "messagebus", 0o4754, "usr/lib/dbus-1.0/dbus-daemon-launch-helper")
    if tree.get("etc/modules") is None:
        write_text(tree, "etc/modules", "# /etc/modules: kernel modules to load at boot time.\n")


# -- the guest ---------------------------------------------------------------------------------

def enable(tree: Tree, wanted_by: str, unit: str, target: str | None = None) -> None:
    """``systemctl enable``'s symlink: ``<wanted_by>.wants/<unit>`` → the unit's file."""
    tree.add_symlink(f"{UNITS}/{wanted_by}.wants/{unit}", target or f"{SYSTEM}/{unit}")


def mask(tree: Tree, unit: str) -> None:
    tree.add_symlink(f"{UNITS}/{unit}", "/dev/null")


def hostname(name: str) -> str:
    """A deployment's name as a host name (letters, digits and ``-``; at most 63)."""
    cleaned = "".join(c if c.isalnum() and c.isascii() else "-" for c in name.lower()).strip("-")[:63]
    return cleaned or "dream-vm"


def fstab(data_disk: bool) -> str:
    lines = ["# /etc/fstab: written by dream. / is mounted by dream's initramfs; no fsck (the",
             "# root is a fresh copy-on-write overlay at each boot).",
             f"{ROOT_DEVICE}\t/\text4\trw,errors=remount-ro\t0\t0"]
    if data_disk:
        lines.append(f"LABEL={DATA_LABEL}\t{DATA_MOUNT}\text4\tdefaults,nofail\t0\t0")
    return "\n".join(lines) + "\n"


def network_file() -> str:
    return "\n".join([
        "# QEMU's user-mode network (-netdev user): a fixed address, so no DHCP wait at boot.",
        "[Match]", "Name=eth0", "", "[Network]", f"Address={GUEST_ADDRESS}/24", f"Gateway={GATEWAY}",
        f"DNS={DNS}", "LinkLocalAddressing=no", "IPv6AcceptRA=no", ""])


def guest(tree: Tree, name: str, data_disk: bool = True) -> None:
    """The systemd configuration of a small QEMU guest (see the module docstring)."""
    tree.add_bytes("etc/machine-id", b"", 0o444)
    for old, new in (("var/run", "/run"), ("var/lock", "/run/lock")):  # base-files' layout
        entry = tree.get(old)
        if entry is None or entry.link != new:
            tree.remove(old)
            tree.add_symlink(old, new)
    tree.add_symlink(f"{UNITS}/default.target", f"{SYSTEM}/multi-user.target")
    for unit in ("systemd-firstboot.service", "serial-getty@ttyS0.service", "getty@tty1.service"):
        mask(tree, unit)
    write_text(tree, "etc/hostname", hostname(name) + "\n")
    write_text(tree, "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname(name)}\n"
                                  "::1\tlocalhost ip6-localhost ip6-loopback\n")
    write_text(tree, "etc/fstab", fstab(data_disk))
    tree.add_dir(DATA_MOUNT.lstrip("/"))
    write_text(tree, "etc/systemd/network/10-dream-vm.network", network_file())
    enable(tree, "multi-user.target", "systemd-networkd.service")
    enable(tree, "sockets.target", "systemd-networkd.socket")
    tree.add_symlink(f"{UNITS}/dbus-org.freedesktop.network1.service", f"{SYSTEM}/systemd-networkd.service")
    if tree.get("etc/resolv.conf") is not None:
        tree.remove("etc/resolv.conf")
    write_text(tree, "etc/resolv.conf", f"nameserver {DNS}\n")
    write_text(tree, "etc/systemd/journald.conf.d/dream-vm.conf", "\n".join([
        "# The journal on the serial console: the host (`doit run:vm`) streams it.",
        "[Journal]", "ForwardToConsole=yes", "TTYPath=/dev/ttyS0", "MaxLevelConsole=info", ""]))


# -- the deployment ---------------------------------------------------------------------------

def wanted_units(target_text: str) -> list[str]:
    """The units a rendered ``<deployment>.target`` wants (``Wants=`` lines, in order)."""
    units: list[str] = []
    for line in target_text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "Wants":
            units += [u for u in value.split() if u not in units]
    return units


def forward_ports(plan: Mapping[str, object]) -> list[int]:
    """The ports the host forwards: each instance's PORT (as the supervisor numbers them:
    port_base + 100 × the service's index + replica) and the services' declared ports."""
    services = plan["services"]
    assert isinstance(services, list)
    base = int(plan["port_base"])  # type: ignore[call-overload]
    ports: set[int] = set()
    for index, service in enumerate(services):
        ports.update(base + 100 * index + replica for replica in range(int(service["replicas"])))
        ports.update(int(p) for p in service.get("ports", []))
    return sorted(ports)


def persistent_volumes(plan: Mapping[str, object], root: str = "/") -> dict[str, list[str]]:
    """Service name → the absolute paths of its persistent volumes."""
    services = plan["services"]
    assert isinstance(services, list)
    return {s["name"]: [posixpath.normpath(posixpath.join(root, v["path"])) for v in s["volumes"] if v.get("persistent")]
            for s in services if any(v.get("persistent") for v in s["volumes"])}


def _unit(sections: list[tuple[str, list[str]]]) -> str:
    return "\n".join(f"[{name}]\n" + "".join(line + "\n" for line in lines) for name, lines in sections)


def ready_unit(deployment: str, units: Iterable[str]) -> str:
    services = [u for u in units if u.endswith(".service")]
    return _unit([("Unit", [f"Description=dream: deployment {deployment} is up (a line on the serial console)",
                            *(f"Requires={u}" for u in services), *(f"After={u}" for u in services)]),
                  ("Service", ["Type=oneshot", "RemainAfterExit=yes",
                               f"ExecStart=/bin/sh -c 'echo \"{READY} {deployment}\" > /dev/ttyS0'"])])


def volumes_script(volumes: Mapping[str, list[str]]) -> str:
    """Each persistent volume bind-mounted from the data disk (same path below its mount)."""
    lines = ["#!/bin/sh", "# dream: the deployment's persistent volumes live on the VM's data disk.", "set -e"]
    for path in sorted({p for paths in volumes.values() for p in paths}):
        source = DATA_MOUNT + "/volumes" + path
        lines.append(f"mkdir -p {shlex.quote(source)} {shlex.quote(path)}")
        lines.append(f"mountpoint -q {shlex.quote(path)} || mount --bind {shlex.quote(source)} {shlex.quote(path)}")
    return "\n".join(lines) + "\n"


def volumes_unit(deployment: str, units: Iterable[str]) -> str:
    before = [f"Before={u}" for u in units]
    return _unit([("Unit", [f"Description=dream: the persistent volumes of {deployment}, on the data disk",
                            f"RequiresMountsFor={DATA_MOUNT}", *before]),
                  ("Service", ["Type=oneshot", "RemainAfterExit=yes", "ExecStart=/bin/sh /usr/lib/dream/vm-volumes.sh"])])


def forward_units(port: int) -> tuple[str, str]:
    """The socket and service that carry ``GUEST_ADDRESS:port`` (where QEMU's hostfwd arrives)
    to ``127.0.0.1:port``, where the model's services listen."""
    socket = _unit([("Unit", [f"Description=dream: {GUEST_ADDRESS}:{port} to 127.0.0.1:{port} (the host's forward)"]),
                    ("Socket", [f"ListenStream={GUEST_ADDRESS}:{port}", "FreeBind=yes"]),
                    ("Install", ["WantedBy=sockets.target"])])
    service = _unit([("Unit", [f"Description=dream: forward to 127.0.0.1:{port}",
                               f"Requires=dream-forward-{port}.socket", f"After=dream-forward-{port}.socket"]),
                     ("Service", [f"ExecStart=/lib/systemd/systemd-socket-proxyd 127.0.0.1:{port}"])])
    return socket, service


def install_deployment(tree: Tree, deployment: str, files: Mapping[str, str], plan: Mapping[str, object],
                       config_dir: str) -> None:
    """The rendered systemd files (path → text: units and their ``<unit>.d/`` drop-ins,
    ``config/…`` config files below ``config_dir``, ``rootfs/<path>`` files at ``/<path>``, owner
    root, mode 0600: the env files, read by systemd itself) installed and the target enabled, with the readiness line, the port forwards and the volumes."""
    target = f"{deployment}.target"
    if target not in files:
        raise DreamError(f"the rendered systemd units have no {target}")
    for path, text in sorted(files.items()):
        if path.startswith("config/"):
            write_text(tree, posixpath.join(config_dir.lstrip("/"), path[len("config/"):]), text)
        elif path.startswith(ROOTFS):  # a file the units read where the deployment's root has it (env files)
            write_text(tree, path[len(ROOTFS):], text, 0o600)
        elif path != "plan.json":  # units, and their drop-ins (<unit>.d/<name>.conf)
            write_text(tree, f"{UNITS}/{path}", text)
    enable(tree, "multi-user.target", target, f"/{UNITS}/{target}")
    units = wanted_units(files[target])
    write_text(tree, f"{UNITS}/dream-vm-ready.service", ready_unit(deployment, units))
    enable(tree, "multi-user.target", "dream-vm-ready.service", f"/{UNITS}/dream-vm-ready.service")
    volumes = persistent_volumes(plan)
    if volumes:  # before every unit of the deployment (its prepare unit makes the volumes' folders)
        write_text(tree, "usr/lib/dream/vm-volumes.sh", volumes_script(volumes), 0o755)
        write_text(tree, f"{UNITS}/dream-vm-volumes.service", volumes_unit(deployment, units))
        tree.add_symlink(f"{UNITS}/{target}.requires/dream-vm-volumes.service", f"/{UNITS}/dream-vm-volumes.service")
    for port in forward_ports(plan):
        socket, service = forward_units(port)
        write_text(tree, f"{UNITS}/dream-forward-{port}.socket", socket)
        write_text(tree, f"{UNITS}/dream-forward-{port}.service", service)
        enable(tree, "sockets.target", f"dream-forward-{port}.socket", f"/{UNITS}/dream-forward-{port}.socket")
