"""The VM's root fix-ups (dream.vm.system): accounts as systemd-sysusers makes them, the merged
dpkg status, the guest's systemd configuration and the deployment's units wired in; the units
dream adds pass ``systemd-analyze verify`` beside the rendered ones."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from dream.oci.tree import DIR, FILE, SYMLINK, Tree
from dream.recipe.load import load_recipe
from dream.renderers.base import Target
from dream.renderers.systemd import SystemdRenderer
from dream.services.plan import build_plan
from dream.vm import system
from dream.vm.build import config_dir
from tests.conftest import REPO, require

PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
GROUP = "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nsystemd-journal:x:101:\n"


def accounts_tree(*confs: tuple[str, str]) -> Tree:
    tree = Tree()
    tree.add_bytes("etc/passwd", PASSWD.encode())
    tree.add_bytes("etc/group", GROUP.encode())
    tree.add_bytes("etc/shadow", b"root:*:0:0:99999:7:::\ndaemon:*:0:0:99999:7:::\n", 0o640, 0, 42)
    tree.add_bytes("etc/gshadow", b"root:*::\ndaemon:*::\nshadow:*::\nsystemd-journal:*::\n", 0o640, 0, 42)
    for name, text in confs:
        tree.add_bytes(f"usr/lib/sysusers.d/{name}", text.encode())
    return tree


def lines(tree: Tree, path: str) -> list[list[str]]:
    return [line.split(":") for line in system.read_text(tree, path).splitlines()]


def test_parse_sysusers_skips_comments_and_ranges() -> None:
    parsed = system.parse_sysusers('# c\nu messagebus - "System Message Bus"\ng  kvm -\nr - 500-900\nm alice kvm\n')
    assert parsed == [system.SysUser("u", "messagebus", "-", "System Message Bus"), system.SysUser("g", "kvm"),
                      system.SysUser("m", "alice", "kvm")]


def test_sysusers_allocates_like_systemd_and_keeps_what_exists() -> None:
    tree = accounts_tree(("basic.conf", "u root 0 - /root\ng daemon 1\n"),
                         ("dbus.conf", 'u messagebus - "System Message Bus"\n'),
                         ("systemd-journal.conf", "g systemd-journal - -\n"),
                         ("x.conf", 'u sync 4:daemon - /bin /bin/sync\nm messagebus daemon\n'))
    system.sysusers(tree, [system.SysUser("g", "kvm")])
    passwd = {f[0]: f for f in lines(tree, "etc/passwd")}
    group = {f[0]: f for f in lines(tree, "etc/group")}
    assert passwd["root"] == PASSWD.splitlines()[0].split(":")  # untouched
    assert passwd["messagebus"][2:4] == ["999", "999"] and group["messagebus"][2] == "999"
    assert passwd["messagebus"][4:] == ["System Message Bus", "/", "/usr/sbin/nologin"]
    assert group["systemd-journal"][2] == "101"  # already there
    assert passwd["sync"][2:4] == ["4", "1"] and passwd["sync"][6] == "/bin/sync"
    assert group["kvm"][2] == "998" and group["daemon"][3] == "messagebus"
    assert ["messagebus", "!*", "", "", "", "", "", "", ""] in lines(tree, "etc/shadow")
    shadow = tree.get("etc/shadow")
    assert shadow is not None and (shadow.mode, shadow.gid) == (0o640, 42)


def test_merged_status_adds_and_upgrades_in_name_order() -> None:
    image = "Package: zlib1g\nVersion: 1\n\nPackage: bash\nStatus: install ok installed\nVersion: 5\n"
    merged = system.merged_status(image, {"udev": "Package: udev\nVersion: 252\n", "zlib1g": "Package: zlib1g\nVersion: 2\n"})
    assert merged == ("Package: bash\nStatus: install ok installed\nVersion: 5\n\n"
                      "Package: udev\nStatus: install ok installed\nVersion: 252\n\n"
                      "Package: zlib1g\nStatus: install ok installed\nVersion: 2\n")


def test_statoverride_sets_owner_mode_and_records_it() -> None:
    tree = accounts_tree()
    tree.add_bytes("etc/group", (GROUP + "messagebus:x:999:\n").encode())
    tree.add_bytes("usr/lib/dbus-1.0/dbus-daemon-launch-helper", b"\x7fELF", 0o755)
    system.statoverride(tree, "root", "messagebus", 0o4754, "usr/lib/dbus-1.0/dbus-daemon-launch-helper")
    helper = tree.get("usr/lib/dbus-1.0/dbus-daemon-launch-helper")
    assert helper is not None and (helper.mode, helper.uid, helper.gid) == (0o4754, 0, 999)
    assert system.read_text(tree, "var/lib/dpkg/statoverride") == "root messagebus 4754 /usr/lib/dbus-1.0/dbus-daemon-launch-helper\n"


def test_guest_configuration() -> None:
    tree = Tree()
    tree.add_dir("var/run")
    tree.add_bytes("etc/resolv.conf", b"nameserver 192.0.2.1\n")
    system.guest(tree, "DB_App")
    machine_id = tree.get("etc/machine-id")
    assert machine_id is not None and machine_id.kind == FILE and machine_id.data == b"" and machine_id.mode == 0o444
    links = {p: e.link for p, e in tree.entries.items() if e.kind == SYMLINK}
    assert links["etc/systemd/system/default.target"] == "/lib/systemd/system/multi-user.target"
    assert links["etc/systemd/system/systemd-firstboot.service"] == "/dev/null"
    assert links["etc/systemd/system/serial-getty@ttyS0.service"] == "/dev/null"
    assert links["etc/systemd/system/multi-user.target.wants/systemd-networkd.service"] == "/lib/systemd/system/systemd-networkd.service"
    assert links["var/run"] == "/run" and links["var/lock"] == "/run/lock"
    assert system.read_text(tree, "etc/hostname") == "db-app\n"
    assert system.read_text(tree, "etc/resolv.conf") == "nameserver 10.0.2.3\n"
    fstab = [line.split("\t") for line in system.read_text(tree, "etc/fstab").splitlines() if not line.startswith("#")]
    assert fstab == [["/dev/vda", "/", "ext4", "rw,errors=remount-ro", "0", "0"],
                     ["LABEL=dream-data", "/var/lib/dream/data", "ext4", "defaults,nofail", "0", "0"]]
    data = tree.get("var/lib/dream/data")
    assert data is not None and data.kind == DIR
    network = system.read_text(tree, "etc/systemd/network/10-dream-vm.network")
    assert "Address=10.0.2.15/24" in network and "Gateway=10.0.2.2" in network
    assert "ForwardToConsole=yes" in system.read_text(tree, "etc/systemd/journald.conf.d/dream-vm.conf")


def demo() -> tuple[dict[str, Any], dict[str, str]]:
    recipe = load_recipe(REPO / "recipes" / "services-demo.yaml", REPO)
    plan = build_plan(recipe.deployments["db-app"], in_image=True)
    files = SystemdRenderer().render(plan, Target(root=Path("/"), out=Path("/nonexistent"),
                                                  options={"root": "/", "config_dir": config_dir("db-app")}))
    return plan, {f.path: f.content for f in files}


def test_ports_and_volumes_of_services_demo() -> None:
    plan, _ = demo()
    assert system.forward_ports(plan) == [5000, 5100, 6379]  # redis's PORT, the app's, redis's own
    assert system.persistent_volumes(plan) == {"redis": ["/data/redis"]}
    replicated = {"port_base": 7000, "services": [{"replicas": 3, "ports": []}, {"replicas": 1, "ports": [80]}]}
    assert system.forward_ports(replicated) == [80, 7000, 7001, 7002, 7100]


def test_install_deployment_wires_units_readiness_forwards_and_volumes() -> None:
    plan, files = demo()
    tree = Tree()
    system.install_deployment(tree, "db-app", files, plan, config_dir("db-app"))
    units = "etc/systemd/system"
    assert tree.get(f"{units}/db-app-redis.service") is not None
    assert system.read_text(tree, "etc/dream/db-app/config/app/counter.py") == files["config/app/counter.py"]
    links = {p: e.link for p, e in tree.entries.items() if e.kind == SYMLINK}
    assert links[f"{units}/multi-user.target.wants/db-app.target"] == f"/{units}/db-app.target"
    assert links[f"{units}/multi-user.target.wants/dream-vm-ready.service"] == f"/{units}/dream-vm-ready.service"
    assert links[f"{units}/db-app.target.requires/dream-vm-volumes.service"] == f"/{units}/dream-vm-volumes.service"
    assert links[f"{units}/sockets.target.wants/dream-forward-5100.socket"] == f"/{units}/dream-forward-5100.socket"
    ready = system.read_text(tree, f"{units}/dream-vm-ready.service")
    for unit in system.wanted_units(files["db-app.target"]):
        assert f"Requires={unit}" in ready and f"After={unit}" in ready
    assert "dream-vm: ready db-app" in ready
    volumes = system.read_text(tree, f"{units}/dream-vm-volumes.service")
    assert "RequiresMountsFor=/var/lib/dream/data" in volumes and "Before=db-app-redis.service" in volumes
    script = system.read_text(tree, "usr/lib/dream/vm-volumes.sh")
    assert "mount --bind /var/lib/dream/data/volumes/data/redis /data/redis" in script
    socket = system.read_text(tree, f"{units}/dream-forward-5100.socket")
    assert "ListenStream=10.0.2.15:5100" in socket and "FreeBind=yes" in socket
    assert "systemd-socket-proxyd 127.0.0.1:5100" in system.read_text(tree, f"{units}/dream-forward-5100.service")


def test_env_files_go_to_their_own_path_readable_by_root_only() -> None:
    plan, files = demo()
    tree = Tree()
    system.install_deployment(tree, "db-app", {**files, "rootfs/secrets/app.env": "TOKEN=s3cret\n"}, plan,
                              config_dir("db-app"))
    entry = tree.get("secrets/app.env")
    assert entry is not None and entry.data == b"TOKEN=s3cret\n"
    assert (entry.mode & 0o777, entry.uid, entry.gid) == (0o600, 0, 0)
    assert tree.get("etc/systemd/system/rootfs/secrets/app.env") is None


def test_volumes_script_quotes_paths() -> None:
    script = system.volumes_script({"db": ["/srv/my data"]})
    assert "mkdir -p '/var/lib/dream/data/volumes/srv/my data' '/srv/my data'" in script


def test_hostname() -> None:
    assert system.hostname("db_app.Prod") == "db-app-prod"
    assert system.hostname("___") == "dream-vm"


def test_dream_units_pass_systemd_analyze_verify() -> None:
    analyze = require("systemd-analyze")
    plan, files = demo()
    tree = Tree()
    system.install_deployment(tree, "db-app", files, plan, config_dir("db-app"))
    with tempfile.TemporaryDirectory(prefix="dream-vm-verify-") as temp:
        folder = Path(temp)
        names = []
        for path, entry in tree.entries.items():
            if path.startswith("etc/systemd/system/") and entry.kind == FILE and path.count("/") == 3:
                (folder / Path(path).name).write_bytes(entry.data or b"")
                names.append(Path(path).name)
        ours = sorted(n for n in names if n.startswith("dream-"))
        run = subprocess.run([analyze, "verify", "--man=no", "--generators=no", *ours], cwd=folder,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
        complaints = [line for line in run.stderr.splitlines() if "dream-" in line or str(folder) in line]
        assert run.returncode == 0 and not complaints, run.stderr
