"""`run` layers: a command executed in a sandbox over the image layers below it; the files it
writes under its declared outputs become the layer.

The one kind that depends on the layers below: its key holds their digests, so a change below
runs the step again (a change above never does), and its task waits for them. Everything else
in the key is what the step sees: the command, user, working directory and environment (the
image's so far, the fixed variables, the step's own), the declared outputs, and the inputs'
bytes (project files staged read-only at their ``dest``, hashed as a `files` layer is).

The sandbox (dream/builders/sandbox.py) has no network, a fixed environment and a time limit;
the output is a tar like every other layer's (sorted, mtimes at SOURCE_DATE_EPOCH), owners and
modes as the step left them. Whether the step itself is deterministic is the step's business:
``doit check:<image>`` runs it again in a fresh sandbox and names the files whose bytes differ
(`differences`).
"""

from __future__ import annotations

import hashlib
import io
import shlex
from pathlib import Path
from typing import Any, Iterator

from dream.builders import sandbox
from dream.builders.base import BuildContext, LayerBuilder
from dream.builders.files import FilesBuilder
from dream.errors import DreamError
from dream.oci.image import source_date_epoch
from dream.oci.read import open_layer
from dream.oci.tar import tar_chunks
from dream.oci.tree import FILE, HARDLINK, SYMLINK, Tree
from dream.oci.unpack import unpack_layer
from dream.recipe.model import LayerSpec

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SHOWN = 5  # dropped writes named in the one line that reports them


class RunBuilder(LayerBuilder):
    kind = "run"
    version = "1"
    reads_lower = True

    def __init__(self) -> None:
        self._inputs = FilesBuilder()  # the inputs are hashed and laid out as a files layer is
        # id(run layer spec) → (that spec, its inputs as a files layer): one object per layer, so
        # FilesBuilder's snapshot taken for the key is the one the step's inputs are staged from
        self._input_layers: dict[int, tuple[LayerSpec, LayerSpec]] = {}

    def key_inputs(self, ctx: BuildContext) -> Any:
        spec = ctx.layer.spec
        return {"command": spec["command"], "user": spec["user"], "workdir": spec["workdir"],
                "env": self.environment(ctx, home="$HOME"), "outputs": spec["outputs"],
                "inputs": self._inputs.key_inputs(self._inputs_context(ctx)) if spec["inputs"] else [],
                "lower": [descriptor.digest for _, descriptor in ctx.lower()]}

    def environment(self, ctx: BuildContext, home: str) -> dict[str, str]:
        """The step's environment: PATH, the image's variables from the layers below and the
        recipe, then the fixed ones, then the step's own ``env``."""
        fixed = {"SOURCE_DATE_EPOCH": str(source_date_epoch()), "HOME": home, "TZ": "UTC",
                 "LC_ALL": "C.UTF-8"}
        return {"PATH": DEFAULT_PATH, "PYTHONDONTWRITEBYTECODE": "1", **ctx.image_env(), **fixed,
                **ctx.layer.spec["env"]}

    def tree(self, ctx: BuildContext, scratch: Path) -> Tree:
        where = f"layer {ctx.recipe.name}/{ctx.layer.name}"
        location, path = ctx.layer.location, f"layers.{ctx.layer.name}.run"
        sandbox.require_root(where)
        ran = self.execute(ctx, scratch)
        if ran.code != 0:
            how = f"was killed by signal {-ran.code}" if ran.code < 0 else f"exited with code {ran.code}"
            tail = "\n".join("  " + line for line in ran.tail())
            raise DreamError(f"`{shlex.join(ctx.layer.spec['command'])}` {how}"
                             + (f"; its last lines:\n{tail}" if tail else " and printed nothing"), location, path)
        tree, dropped = sandbox.collect(ran.upper, ctx.layer.spec["outputs"])
        missing = sandbox.missing_outputs(tree, ctx.layer.spec["outputs"])
        if missing:
            raise DreamError(f"the step wrote nothing at {', '.join(missing)} (declared in outputs)",
                             location, path + ".outputs")
        tree.label = f"{ctx.recipe.name}/{ctx.layer.name}"
        if dropped:
            more = f" and {len(dropped) - SHOWN} more" if len(dropped) > SHOWN else ""
            print(f"{tree.label}: dropped {len(dropped)} writes outside its outputs: "
                  f"{', '.join(dropped[:SHOWN])}{more}")
        print(f"{tree.label}: ran `{shlex.join(ctx.layer.spec['command'])}` in {ran.seconds:.1f} s")
        return tree

    def execute(self, ctx: BuildContext, scratch: Path) -> sandbox.Ran:
        """Run the step in a fresh sandbox below ``scratch`` (its writes stay there)."""
        spec = ctx.layer.spec
        lower = [sandbox.unpacked(ctx.store, descriptor) for _, descriptor in ctx.lower()]
        if not lower:
            raise DreamError("a run layer needs layers below it to run in", ctx.layer.location,
                             f"layers.{ctx.layer.name}.run")
        if spec["inputs"]:
            staged = scratch / "inputs"
            inputs = self._inputs.tree(self._inputs_context(ctx))
            unpack_layer(io.BufferedReader(_Chunks(tar_chunks(inputs.sorted_entries(), source_date_epoch(),
                                                                inputs.label))), staged)
            lower.append(staged)
        uid, gid, groups, home = resolve_user(lower, spec["user"], ctx.layer)
        step = sandbox.Step(argv=spec["command"], env=self.environment(ctx, home), uid=uid, gid=gid,
                            groups=groups, cwd=spec["workdir"], timeout=spec["timeout"])
        return sandbox.run(lower, step, scratch / "sandbox")

    def _inputs_context(self, ctx: BuildContext) -> BuildContext:
        """``ctx`` with the step's inputs as the layer: `FilesBuilder` hashes and lays them out."""
        layer = ctx.layer
        kept = self._input_layers.get(id(layer))
        if kept is None or kept[0] is not layer:
            inputs = LayerSpec(name=layer.name, kind="files", spec=layer.spec["inputs"], comment="",
                               location=layer.location,
                               places={k.removeprefix("inputs"): v for k, v in layer.places.items()
                                       if k.startswith("inputs")})
            kept = self._input_layers[id(layer)] = (layer, inputs)
        return BuildContext(ctx.recipe, kept[1], ctx.read_lock, ctx.store, ctx.lower, ctx.image_env)

    def differences(self, ctx: BuildContext, built: Any, scratch: Path) -> tuple[list[str], int]:
        """Run the step again in a fresh sandbox and compare its layer with the stored one
        ``built``: the image paths whose bytes, kind, link, mode or owner differ, and how many
        entries were compared."""
        fresh = self.tree(ctx, scratch)
        now = {entry.path: _fingerprint(entry.kind, entry.mode, entry.uid, entry.gid,
                                        entry.link, _file_sha256(entry.source) if entry.kind == FILE else "")
               for entry in fresh.entries.values()}
        before = dict(_stored_fingerprints(ctx, built))
        differ = sorted("/" + path for path in now.keys() | before.keys() if now.get(path) != before.get(path))
        return differ, len(now.keys() | before.keys())


def resolve_user(lower: list[Path], user: str, layer: LayerSpec) -> tuple[int, int, list[int], str]:
    """uid, gid, supplementary gids and home of ``user`` (a name, ``uid`` or ``uid:gid``),
    from the account files of the topmost layer below that has them."""
    passwd = _accounts(lower, "etc/passwd")
    group = _accounts(lower, "etc/group")
    name, _, group_part = user.partition(":")
    entry = next((e for e in passwd if e[0] == name), None)
    if entry is None and not name.isdigit():
        raise DreamError(f"no user {name!r} in the layers below (their /etc/passwd)", layer.location,
                         f"layers.{layer.name}.run.user")
    uid = int(entry[2]) if entry else int(name)
    if group_part:
        found = next((g for g in group if g[0] == group_part), None)
        if found is None and not group_part.isdigit():
            raise DreamError(f"no group {group_part!r} in the layers below (their /etc/group)",
                             layer.location, f"layers.{layer.name}.run.user")
        gid = int(found[2]) if found else int(group_part)
    else:
        gid = int(entry[3]) if entry else uid
    member_of = sorted({int(g[2]) for g in group if entry and len(g) > 3 and entry[0] in g[3].split(",")} | {gid})
    home = entry[5] if entry and len(entry) > 5 else ("/root" if uid == 0 else "/")
    return uid, gid, member_of, home


def _accounts(lower: list[Path], name: str) -> list[list[str]]:
    for root in reversed(lower):
        path = root / name
        if path.is_file() and not path.is_symlink():
            return [line.split(":") for line in path.read_text(errors="replace").splitlines() if line]
    return []


def _fingerprint(kind: str, mode: int, uid: int, gid: int, link: str, sha256: str) -> tuple[Any, ...]:
    return (kind, mode & 0o7777, uid, gid, link, sha256)


def _file_sha256(path: Path | None) -> str:
    digest = hashlib.sha256()
    assert path is not None
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _stored_fingerprints(ctx: BuildContext, built: Any) -> Iterator[tuple[str, tuple[Any, ...]]]:
    import tarfile
    kinds = {tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: SYMLINK, tarfile.LNKTYPE: HARDLINK}
    with open_layer(ctx.store, built) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            path = member.name.removeprefix("./").rstrip("/")
            sha256 = ""
            if member.isfile():
                digest = hashlib.sha256()
                source = archive.extractfile(member)
                assert source is not None
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                sha256 = digest.hexdigest()
            kind = FILE if member.isfile() else kinds.get(member.type, "other")
            link = {SYMLINK: member.linkname, HARDLINK: member.linkname.removeprefix("./")}.get(kind, "")
            yield path, _fingerprint(kind, member.mode, member.uid, member.gid, link, sha256)


class _Chunks(io.RawIOBase):
    """An iterator of byte chunks as a readable stream (a tar writer's output, for tarfile)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._left = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            try:
                self._left = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size

