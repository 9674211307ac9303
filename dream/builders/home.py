"""`home` layers: a user, its home directory and dotfiles, as home-manager gives nix2gpu.

The account is added to the base system's own account files, read from the image's Debian
layers in the store (so it gets the next line, keeps every system account, and joins existing
groups such as ``sudo`` by their real gid). The layer's key holds those layers' digests: a new
base system re-derives the accounts, anything else leaves this layer alone.
"""

from __future__ import annotations

import posixpath
import shlex
from pathlib import Path
from typing import Any

from dream.builders.base import BuildContext, LayerBuilder
from dream.errors import DreamError
from dream.oci.read import read_files
from dream.oci.tree import Tree
from dream.store.layout import file_sha256

ACCOUNT_FILES = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")
ENV_FILE = ".config/dream/env.sh"


class HomeBuilder(LayerBuilder):
    kind = "home"
    version = "2"
    needs_lock = False
    reads_lower = True

    def key_inputs(self, ctx: BuildContext) -> Any:
        spec = dict(ctx.layer.spec)
        spec["files"] = [{k: (file_sha256(v) if k == "src" else v) for k, v in item.items()}
                         for item in spec["files"]]
        return {"spec": spec, "base": [d.digest for d in _debian_layers(ctx)]}

    def tree(self, ctx: BuildContext, scratch: Path | None = None) -> Tree:
        spec = ctx.layer.spec
        accounts = _base_accounts(ctx)
        tree = Tree()
        _add_accounts(tree, spec, accounts, ctx)
        uid, gid, home = spec["uid"], spec["gid"], spec["home"]
        tree.add_dir(home, 0o750, uid, gid)
        files: dict[str, tuple[bytes, int]] = {}
        if spec["env"]:
            body = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(spec["env"].items()))
            files[ENV_FILE] = (("# written by dream: the user's environment\n" + body).encode(), 0o644)
        for item in spec["files"]:
            data = Path(item["src"]).read_bytes() if "src" in item else item["content"].encode()
            files[item["path"]] = (data, int(item.get("mode", "0644"), 8))
        for relative, (data, mode) in files.items():
            path = posixpath.normpath(posixpath.join(home, relative))
            if not path.startswith(home.rstrip("/") + "/"):
                raise DreamError(f"dotfile {relative!r} is outside the home directory",
                                 ctx.layer.location, f"layers.{ctx.layer.name}.home.files")
            parent = posixpath.dirname(path)
            while parent != home.rstrip("/") and parent.startswith(home):
                tree.add_dir(parent, 0o755, uid, gid)
                parent = posixpath.dirname(parent)
            tree.add_bytes(path, data, mode, uid, gid)
        if spec["sudo"]:
            rule = f"{spec['user']} ALL=(ALL:ALL) NOPASSWD: ALL\n"
            tree.add_bytes(f"/etc/sudoers.d/{spec['user']}", rule.encode(), 0o440)
        return tree


def _debian_layers(ctx: BuildContext) -> list[Any]:
    layers = [descriptor for kind, descriptor in ctx.lower() if kind == "debian"]
    if not layers:
        raise DreamError("a home layer needs a debian layer below it (the base accounts come "
                         "from there)", ctx.layer.location, f"layers.{ctx.layer.name}")
    return layers


def _base_accounts(ctx: BuildContext) -> dict[str, list[list[str]]]:
    """The account files of the topmost Debian layer that has them, as lists of fields."""
    found: dict[str, bytes] = {}
    for descriptor in reversed(_debian_layers(ctx)):
        for name, data in read_files(ctx.store, descriptor, set(ACCOUNT_FILES)).items():
            found.setdefault(name, data)
    if "etc/passwd" not in found or "etc/group" not in found:
        raise DreamError("the Debian layers below have no /etc/passwd or /etc/group",
                         ctx.layer.location, f"layers.{ctx.layer.name}")
    return {name: [line.split(":") for line in found.get(name, b"").decode().splitlines() if line]
            for name in ACCOUNT_FILES}


def _add_accounts(tree: Tree, spec: dict[str, Any], accounts: dict[str, list[list[str]]],
                  ctx: BuildContext) -> None:
    user, uid, gid = spec["user"], spec["uid"], spec["gid"]
    where, path = ctx.layer.location, f"layers.{ctx.layer.name}.home"
    passwd, group = accounts["etc/passwd"], accounts["etc/group"]
    if any(entry[0] == user for entry in passwd):
        raise DreamError(f"user {user!r} already exists in the base system", where, path + ".user")
    if any(entry[2] == str(uid) for entry in passwd):
        raise DreamError(f"uid {uid} is already used in the base system", where, path + ".uid")
    groups = {entry[0]: entry for entry in group}
    missing = [name for name in spec["groups"] if name not in groups]
    if missing:
        raise DreamError(f"no such group in the base system: {', '.join(missing)}", where, path + ".groups")
    own_group = not any(entry[2] == str(gid) for entry in group)
    passwd = passwd + [[user, "x", str(uid), str(gid), user, spec["home"], spec["shell"]]]
    group = [_with_member(entry, user, spec["groups"]) for entry in group]
    if own_group:
        group.append([user, "x", str(gid), ""])
    # No password ("*": key logins and sudo only) and no aging: a last-change day of 0 would mean
    # "must change the password now", and `su - dev` as root would fail on it.
    shadow = accounts["etc/shadow"] + [[user, "*", "", "0", "99999", "7", "", "", ""]]
    gshadow = [_with_member(entry, user, spec["groups"]) for entry in accounts["etc/gshadow"]]
    if own_group and accounts["etc/gshadow"]:
        gshadow.append([user, "!", "", ""])
    shadow_gid = int(groups["shadow"][2]) if "shadow" in groups else 42
    tree.add_bytes("/etc/passwd", _lines(passwd), 0o644)
    tree.add_bytes("/etc/group", _lines(group), 0o644)
    tree.add_bytes("/etc/shadow", _lines(shadow), 0o640, 0, shadow_gid)
    if accounts["etc/gshadow"]:
        tree.add_bytes("/etc/gshadow", _lines(gshadow), 0o640, 0, shadow_gid)


def _with_member(entry: list[str], user: str, wanted: list[str]) -> list[str]:
    """``entry`` with ``user`` added to its member list (the 4th field of group and gshadow)."""
    if entry[0] not in wanted or len(entry) < 4:
        return entry
    members = [m for m in entry[3].split(",") if m]
    return entry[:3] + [",".join(members + [user])] + entry[4:]


def _lines(entries: list[list[str]]) -> bytes:
    return "".join(":".join(entry) + "\n" for entry in entries).encode()
