"""``doit inspect:<image>``: what is in a built image, without an engine and without dive.

A table of the image's layers (name, kind, compressed and uncompressed size, file count, share
of the image, and what changed since the previous build of the tag), the biggest files and the
layer holding each, and the config. ``--svg FILE`` draws the layers as one picture: a bar per
layer, its length the layer's uncompressed size (its darker part the compressed size), colored
by kind (drawsvg, the optional extra ``dream[inspect]``).

- Names and comments come from the image config's history (dream writes ``dream layer <name>``
  per layer), kinds from the recipe's layer jobs of that name.
- Uncompressed size, file count and biggest files need the layer's tar: each layer is streamed
  once (`open_layer`, tarfile in stream mode) and its statistics kept by layer digest in
  ``dream/inspect/<hex>.json`` under the store, so a second inspect reads no layer at all.
- "What changed": `Store.tag` keeps the manifest and config a tag named before it moved
  (``dream/previous/<name>.json``); each layer is compared with the previous image's layer of the
  same name: ``same``, ``changed`` or ``added``, and a previous layer no longer there ``removed``.
"""

from __future__ import annotations

import heapq
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable

from doit.exceptions import TaskFailed

from dream.errors import DreamError
from dream.oci.descriptor import Descriptor
from dream.store import Store, open_store

if TYPE_CHECKING:
    from rich.console import Console

    from dream.tasks import ImageJob

STATS_VERSION = 1  # bump when what `layer_stats` records changes: old cache entries are ignored
KEPT_FILES = 50  # the biggest files recorded per layer (a larger --top than this shows at most these)
TOP_FILES = 15
HISTORY_PREFIX = "dream layer "
INSTALL_HINT = "--svg needs the optional extra: pip install 'dream[inspect]' (or pip install drawsvg)"

# Okabe–Ito colors (told apart with any color vision), one per layer kind
KIND_COLORS = {"debian": "#D55E00", "cuda": "#009E73", "python": "#0072B2", "home": "#CC79A7",
               "services": "#E69F00", "files": "#56B4E9", "run": "#F0E442", "from": "#999999"}
OTHER_COLOR = "#BBBBBB"


# -- one layer's statistics ---------------------------------------------------------------------

@dataclass(frozen=True)
class LayerStats:
    uncompressed: int  # bytes of the tar stream (what the layer's diff ID hashes)
    files: int  # entries that are not directories (regular files, links, devices)
    biggest: tuple[tuple[str, int], ...]  # (path, size) of the largest regular files, largest first

    def to_json(self) -> dict[str, Any]:
        return {"version": STATS_VERSION, "uncompressed": self.uncompressed, "files": self.files,
                "biggest": [list(entry) for entry in self.biggest]}

    @classmethod
    def from_json(cls, data: Any) -> LayerStats | None:
        """The statistics in a cache file; None for anything else (another version, damage)."""
        try:
            if data["version"] != STATS_VERSION:
                return None
            return cls(int(data["uncompressed"]), int(data["files"]),
                       tuple((str(path), int(size)) for path, size in data["biggest"]))
        except (KeyError, TypeError, ValueError):
            return None


class _Counting:
    """A read-only stream that counts the bytes read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def layer_stats(stream: IO[bytes], keep: int = KEPT_FILES) -> LayerStats:
    """Size, file count and biggest files of the uncompressed tar ``stream`` (read to its end)."""
    import tarfile  # here: `doit list` pays nothing for it
    counting = _Counting(stream)
    files, biggest = 0, list[tuple[int, str]]()  # a min-heap of (size, path), at most ``keep`` long
    with tarfile.open(fileobj=counting, mode="r|") as archive:  # type: ignore[call-overload]
        for member in archive:
            if member.isdir():
                continue
            files += 1
            if member.isfile():
                entry = (member.size, "/" + member.name.removeprefix("./").lstrip("/"))
                if len(biggest) < keep:
                    heapq.heappush(biggest, entry)
                elif entry > biggest[0]:
                    heapq.heapreplace(biggest, entry)
    while counting.read(1 << 20):  # the zero blocks after the end-of-archive marker count too
        pass
    ranked = sorted(biggest, key=lambda e: (-e[0], e[1]))
    return LayerStats(counting.count, files, tuple((path, size) for size, path in ranked))


def stats_dir(store: Store) -> Path:
    return store.meta / "inspect"


def cached_stats(store: Store, descriptor: Descriptor) -> LayerStats | None:
    """The layer's statistics from the cache, or None if they were never computed here."""
    try:
        data = json.loads((stats_dir(store) / store.blob_path(descriptor.digest).name).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    return LayerStats.from_json(data)


def compute_stats(store: Store, descriptor: Descriptor) -> LayerStats:
    """Stream the layer once (fetched first if only a registry has it) and cache what it holds.
    A cache that cannot be written costs the next inspect a re-read, nothing more."""
    from dream.oci.read import open_layer
    with open_layer(store, descriptor) as stream:
        stats = layer_stats(stream)
    path = stats_dir(store) / store.blob_path(descriptor.digest).name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(stats.to_json()))
        os.replace(temporary, path)
    except OSError:
        pass
    return stats


# -- the image ------------------------------------------------------------------------------------

@dataclass
class Layer:
    name: str
    kind: str
    comment: str
    descriptor: Descriptor
    stats: LayerStats | None = None
    change: str = ""  # same | changed | added; "" when there is no previous build to compare


@dataclass
class Report:
    name: str
    manifest: Descriptor
    layers: list[Layer]
    config: dict[str, Any]
    previous: str | None = None  # the previous build's manifest digest
    removed: list[str] = field(default_factory=list)  # layers of the previous build not in this one
    problems: list[str] = field(default_factory=list)  # layers whose statistics could not be had

    @property
    def compressed(self) -> int:
        return sum(layer.descriptor.size for layer in self.layers)

    @property
    def uncompressed(self) -> int:
        return sum(layer.stats.uncompressed for layer in self.layers if layer.stats)

    def biggest(self, top: int = TOP_FILES) -> list[tuple[str, int, str]]:
        """(path, size, layer) of the ``top`` largest files of all layers, largest first."""
        entries = [(path, size, layer.name) for layer in self.layers if layer.stats
                   for path, size in layer.stats.biggest]
        return sorted(entries, key=lambda e: (-e[1], e[0], e[2]))[:top]


def layer_names(manifest: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, comment) of each of the manifest's layers, from the config's history entries that
    made a layer (dream's say ``dream layer <name>``); ``layer <n>`` where history says nothing."""
    history = [entry for entry in config.get("history", []) if isinstance(entry, dict)
               and not entry.get("empty_layer")]
    names = []
    for index, _ in enumerate(manifest.get("layers", [])):
        entry = history[index] if index < len(history) else {}
        made_by = str(entry.get("created_by", ""))
        name = made_by.removeprefix(HISTORY_PREFIX) if made_by.startswith(HISTORY_PREFIX) else f"layer {index + 1}"
        names.append((name, str(entry.get("comment", ""))))
    return names


def changes(current: list[tuple[str, str]], previous: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Compare (name, digest) per layer with the previous build's: for each current layer
    ``same`` (same name, same digest), ``changed`` (same name, other bytes) or ``added``; and the
    names of the previous layers that are gone."""
    before = dict(previous)
    marks = ["added" if name not in before else "same" if before[name] == digest else "changed"
             for name, digest in current]
    names = {name for name, _ in current}
    return marks, [name for name, _ in previous if name not in names]


StatsFor = Callable[[Store, Descriptor], LayerStats]


def inspect_image(store: Store, name: str, kinds: dict[str, str], manifest: Descriptor,
                  stats_for: StatsFor = compute_stats, say: Callable[[str], None] = print) -> Report:
    """What the store's image ``name`` (its manifest descriptor ``manifest``) holds."""
    body = store.read_manifest(manifest.digest)
    config = store.read_json(body["config"]["digest"])
    named = layer_names(body, config)
    layers = [Layer(layer_name, kinds.get(layer_name, "?"), comment, Descriptor.from_json(raw))
              for (layer_name, comment), raw in zip(named, body.get("layers", []))]
    report = Report(name, manifest, layers, config)

    missing = []
    for layer in layers:
        layer.stats = cached_stats(store, layer.descriptor)
        if layer.stats is None:
            missing.append(layer)
    if missing:
        total = sum(layer.descriptor.size for layer in missing)
        say(f"{name}: reading {len(missing)} of {len(layers)} layers ({total:,} bytes) once; "
            f"their statistics are kept in {stats_dir(store)}")

        def one(layer: Layer) -> None:
            try:
                layer.stats = stats_for(store, layer.descriptor)
            except DreamError as exc:  # a base layer its registry no longer serves, a corrupt blob
                report.problems.append(f"{layer.name}: {exc}")
            except Exception as exc:  # noqa: BLE001 (a foreign layer that is no tar: the rest still shows)
                report.problems.append(f"{layer.name}: cannot read it as a tar ({type(exc).__name__}: {exc})")

        # the largest first: with a thread per core, the long reads overlap (igzip lets go of the GIL)
        with ThreadPoolExecutor(max_workers=max(1, min(len(missing), os.cpu_count() or 1))) as pool:
            list(pool.map(one, sorted(missing, key=lambda layer: -layer.descriptor.size)))

    record = store.previous(name)
    if record is not None:
        report.previous = str(record.get("manifest", {}).get("digest", "")) or None
        before = record.get("body"), record.get("config")
        if isinstance(before[0], dict) and isinstance(before[1], dict):
            earlier = [(layer_name, str(raw.get("digest"))) for (layer_name, _), raw
                       in zip(layer_names(before[0], before[1]), before[0].get("layers", []))]
            marks, report.removed = changes([(layer.name, layer.descriptor.digest) for layer in layers], earlier)
            for layer, mark in zip(layers, marks):
                layer.change = mark
    return report


# -- as text --------------------------------------------------------------------------------------

def human(size: int) -> str:
    """``545 B``, ``2.2 kB``, ``599.6 MB``, ``2.41 GB`` (decimal units, as registries show them)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            value = size / scale
            return f"{value:.2f} {unit}" if unit == "GB" else f"{value:.1f} {unit}"
    return f"{size} B"


def percent(part: int, whole: int) -> str:
    """``52.4%``; ``<0.1%`` for a part too small to show as a tenth of a percent, but not nothing."""
    share = 100 * part / whole
    return "<0.1%" if 0 < share < 0.05 else f"{share:.1f}%"


def config_rows(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The config fields a person asks about, as (field, text) rows."""
    inner = config.get("config") or {}
    rows: list[tuple[str, str]] = []

    def add(label: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            rows.append((label, value if isinstance(value, str) else json.dumps(value)))

    add("architecture", f"{config.get('os', '?')}/{config.get('architecture', '?')}"
        + (f"/{config['variant']}" if config.get("variant") else ""))
    add("created", config.get("created"))
    add("entrypoint", inner.get("Entrypoint"))
    add("cmd", inner.get("Cmd"))
    add("user", inner.get("User"))
    add("workdir", inner.get("WorkingDir"))
    add("ports", ", ".join(sorted(inner.get("ExposedPorts") or {})))
    add("stop signal", inner.get("StopSignal"))
    for entry in inner.get("Env") or []:
        add("env", entry)
    for key, value in sorted((inner.get("Labels") or {}).items()):
        add("label", f"{key}={value}")
    return rows


def render(report: Report, console: Console, top: int = TOP_FILES) -> None:
    from rich.table import Table
    layers = report.layers
    whole = report.uncompressed
    title = (f"{report.name}  {report.manifest.digest[:19]}…  {len(layers)} layers, "
             f"{human(report.compressed)} compressed, {human(whole)} uncompressed")
    table = Table(title=title, title_justify="left")
    for header, justify in (("#", "right"), ("layer", "left"), ("kind", "left"), ("compressed", "right"),
                            ("uncompressed", "right"), ("files", "right"), ("share", "right"),
                            ("since last build", "left"), ("comment", "left")):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for number, layer in enumerate(layers, 1):
        stats = layer.stats
        table.add_row(str(number), layer.name, layer.kind, human(layer.descriptor.size),
                      human(stats.uncompressed) if stats else "?", f"{stats.files:,}" if stats else "?",
                      percent(stats.uncompressed, whole) if stats and whole else "?",
                      layer.change or "-", layer.comment)
    for name in report.removed:
        table.add_row("", name, "", "", "", "", "", "removed", "")
    console.print(table)
    console.print("share: of the uncompressed size; files: entries that are not directories")
    if report.previous is None:
        console.print("since last build: no earlier build of this tag is recorded in this store")
    elif any(layer.change for layer in layers) or report.removed:
        console.print(f"since last build: compared with {report.previous}")
    else:
        console.print(f"since last build: {report.previous}, whose manifest was not kept to compare with")
    for problem in report.problems:
        console.print(f"not read: {problem}")

    files = Table(title=f"the {top} biggest files", title_justify="left")
    for header, justify in (("size", "right"), ("path", "left"), ("layer", "left")):
        files.add_column(header, justify=justify)  # type: ignore[arg-type]
    for path, size, layer_name in report.biggest(top):
        files.add_row(human(size), path, layer_name)
    console.print(files)

    config = Table(title="config", title_justify="left", show_header=False)
    config.add_column("field")
    config.add_column("value", overflow="fold")
    for label, value in config_rows(report.config):
        config.add_row(label, value)
    console.print(config)


# -- as a picture ---------------------------------------------------------------------------------

def _attr(value: str) -> str:
    """``value`` fit for an SVG attribute (drawsvg writes attribute values as given)."""
    from xml.sax.saxutils import escape
    return escape(value, {'"': "&quot;"})


def svg_text(report: Report) -> str:
    """The layers as an SVG document: a title, one bar for the whole image split by layer, then a
    row per layer (bottom layer first) whose bar's length is its uncompressed size, its darker
    inner part the compressed size, colored by kind; a legend of the kinds."""
    import drawsvg as draw
    label_w, bar_w, detail_w, row_h, gap, pad = 230, 460, 330, 22, 6, 16
    width = pad + label_w + bar_w + detail_w + pad
    layers = report.layers
    sizes = [layer.stats.uncompressed if layer.stats else layer.descriptor.size for layer in layers]
    whole, largest = max(sum(sizes), 1), max(sizes, default=1) or 1
    kinds = list(dict.fromkeys(layer.kind for layer in layers))
    top = pad + 54  # below the title and the whole-image bar
    rows_bottom = top + 24 + len(layers) * (row_h + gap) + (row_h + gap) * bool(report.removed)
    height = rows_bottom + 20 + 18 * ((len(kinds) + 5) // 6) + pad
    d = draw.Drawing(width, height, font_family="DejaVu Sans, Verdana, sans-serif")
    d.append(draw.Rectangle(0, 0, width, height, fill="#ffffff"))
    d.append(draw.Text(f"{report.name}  {report.manifest.digest[:19]}…  {len(layers)} layers, "
                       f"{human(report.compressed)} compressed, {human(report.uncompressed)} uncompressed",
                       15, pad, pad + 12, font_weight="bold", class_="title"))

    x = float(pad + label_w)  # the whole image, one segment per layer
    d.append(draw.Text("whole image", 12, pad, pad + 38, class_="label"))
    for number, (layer, size) in enumerate(zip(layers, sizes), 1):
        segment = bar_w * size / whole
        rect = draw.Rectangle(round(x, 2), pad + 26, round(segment, 2), 16,
                              fill=KIND_COLORS.get(layer.kind, OTHER_COLOR), stroke="#ffffff",
                              stroke_width=0.5, class_="segment", data_name=_attr(layer.name))
        rect.append_title(f"{layer.name}: {human(size)} ({100 * size / whole:.1f}%)")
        d.append(rect)
        if segment >= 16:  # the layer's number where it fits
            d.append(draw.Text(str(number), 10, round(x + segment / 2, 2), pad + 38,
                               text_anchor="middle", fill="#ffffff", class_="segment-number"))
        x += segment

    d.append(draw.Text("layer (kind)", 11, pad, top + 10, fill="#555555"))
    d.append(draw.Text("uncompressed size (darker: compressed)", 11, pad + label_w, top + 10, fill="#555555"))
    d.append(draw.Text("compressed → uncompressed (share), files, change", 11,
                       pad + label_w + bar_w + 10, top + 10, fill="#555555"))
    for index, (layer, size) in enumerate(zip(layers, sizes)):
        y = top + 24 + index * (row_h + gap)
        color = KIND_COLORS.get(layer.kind, OTHER_COLOR)
        group = draw.Group(class_="layer", data_name=_attr(layer.name), data_kind=_attr(layer.kind),
                           data_size=str(size), data_change=_attr(layer.change))
        group.append(draw.Text(f"{index + 1}. {layer.name} ({layer.kind})", 12, pad, y + 15, class_="label"))
        length = max(bar_w * size / largest, 1.0)
        bar = draw.Rectangle(pad + label_w, y, round(length, 2), row_h, fill=color, fill_opacity=0.45,
                             class_="bar")
        bar.append_title(f"{layer.name}: {human(size)} uncompressed, {human(layer.descriptor.size)} compressed"
                         + (f" — {layer.comment}" if layer.comment else ""))
        group.append(bar)
        packed = max(min(bar_w * layer.descriptor.size / largest, length), 1.0)
        group.append(draw.Rectangle(pad + label_w, y, round(packed, 2), row_h, fill=color, class_="compressed"))
        stats = layer.stats
        detail = (f"{human(layer.descriptor.size)} → {human(stats.uncompressed)} ({percent(size, whole)}), "
                  f"{stats.files:,} file{'' if stats.files == 1 else 's'}"
                  if stats else f"{human(layer.descriptor.size)} (not read)")
        if layer.change:
            detail += f", {layer.change}"
        group.append(draw.Text(detail, 12, pad + label_w + bar_w + 10, y + 15, class_="detail",
                               font_weight="bold" if layer.change in ("changed", "added") else "normal"))
        d.append(group)
    if report.removed:
        y = top + 24 + len(layers) * (row_h + gap)
        d.append(draw.Text(f"removed since last build: {', '.join(report.removed)}", 12, pad, y + 15,
                           class_="removed"))

    for index, kind in enumerate(kinds):  # the legend
        lx, ly = pad + (index % 6) * 150, rows_bottom + 8 + 18 * (index // 6)
        d.append(draw.Rectangle(lx, ly, 12, 12, fill=KIND_COLORS.get(kind, OTHER_COLOR), class_="legend",
                                data_kind=_attr(kind)))
        d.append(draw.Text(kind, 12, lx + 18, ly + 10))
    return str(d.as_svg())


def check_picture_target(path: str) -> Path:
    """The ``--svg`` path, checked before any layer is read: an ``.svg`` file in a folder that
    exists, and drawsvg importable; otherwise one line."""
    target = Path(path)
    if target.is_dir():
        raise DreamError(f"--svg {path}: is a directory; give a file name such as {target / 'layers.svg'}")
    if not target.parent.is_dir():
        raise DreamError(f"--svg {path}: no directory {target.parent}; create it first")
    try:
        import drawsvg  # noqa: F401
    except ImportError:
        raise DreamError(INSTALL_HINT) from None
    if target.suffix.lower() != ".svg":
        raise DreamError(f"--svg {path}: the picture is an SVG file; name it …/{target.stem}.svg "
                         "(a browser or `rsvg-convert` turns it into a PNG)")
    return target


def write_picture(report: Report, target: Path) -> None:
    """Write the picture whole or not at all (a temporary file beside it, then a rename)."""
    data = svg_text(report).encode()
    temporary = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


# -- the task -------------------------------------------------------------------------------------

def _console() -> Console:
    from rich.console import Console
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:  # a pipe or a file: wide enough that the tables do not wrap
        console = Console(file=sys.stdout, highlight=False, width=int(os.environ.get("COLUMNS") or 150))
    return console


def run_inspect(image: ImageJob, fetch: Callable[[Store, Descriptor], None] | None, svg: str) -> None | TaskFailed:
    name = image.recipe.name
    target = check_picture_target(svg) if svg else None
    store = open_store(fetch=fetch)
    kinds = {job.name: job.layer.kind for job in image.layers}
    with store.lock("store", shared=True):  # gc waits: no layer vanishes while it is read
        report = inspect_image(store, name, kinds, image.tagged(store))
    render(report, _console())
    if target is not None:
        write_picture(report, target)
        print(f"{name}: drew {len(report.layers)} layers into {target}")
    return None
