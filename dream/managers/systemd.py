"""systemd runs a deployment's rendered units: ``doit run:systemd`` (dream/renderers/systemd.py).

``up`` installs the units and their drop-in folders (system: ``/etc/systemd/system``; user:
``~/.config/systemd/user``, ``$XDG_CONFIG_HOME`` respected), ``systemctl [--user]
daemon-reload``, starts ``journalctl -f -o json`` on every unit of the deployment (before the
start, so no line is missed), ``systemctl start <deployment>.target``, and prints each line
as ``<service> | …`` (``<service>.<n>`` for an instance, as the supervisor names replicas) until
Ctrl-C (or SIGTERM/SIGHUP to dream); then ``down``: ``systemctl stop`` of the target and of each
unit, ``reset-failed``, the installed files removed, ``daemon-reload``.

What was installed is what the files say: every installed file starts with the renderer's
``# Deployment <name>, …`` line, so ``down`` removes exactly the files of this deployment it
finds there (also those of an earlier rendering that has since lost a unit) and never a file
dream did not write; ``up`` refuses to overwrite such a file.

Without a running systemd (a container, this build machine: PID 1 is not systemd) the first
``systemctl`` says so and ``up`` stops with one line, before anything is installed. Real systemd
runs the units inside the VM (``doit run:vm``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Callable, Mapping

from dream.errors import DreamError
from dream.managers.interrupts import signals_as_interrupt, through_interrupts
from dream.renderers.base import Plan
from dream.renderers.systemd import INSTANCE_DROP_IN, PREPARE
from dream.supervisor.output import Printer

SYSTEMCTL = "systemctl"
JOURNALCTL = "journalctl"
SYSTEM_UNITS = Path("/etc/systemd/system")
VENDOR_DIRS = {  # where the distribution's units are: an installed unit of the same name would shadow one
    "system": (Path("/run/systemd/system"), Path("/usr/local/lib/systemd/system"), Path("/usr/lib/systemd/system"),
               Path("/lib/systemd/system")),
    "user": (Path("/etc/systemd/user"), Path("/usr/local/lib/systemd/user"), Path("/usr/lib/systemd/user"))}
UNIT_SUFFIXES = (".service", ".target", ".timer")
NOT_LOADED = 5  # systemctl's exit status for "Unit … not loaded"
NO_SYSTEMD = ("not been booted with systemd", "Failed to connect to bus", "Host is down",
              "No medium found", "DBUS_SESSION_BUS_ADDRESS")

Run = Callable[[list[str]], "subprocess.CompletedProcess[str]"]
Popen = Callable[[list[str]], "subprocess.Popen[Any]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True)


def _popen(argv: list[str]) -> subprocess.Popen[Any]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, errors="replace", process_group=0)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def user_unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "systemd" / "user"


def marker(deployment: str) -> str:
    """The first line of every file the renderer writes for ``deployment``."""
    return f"# Deployment {deployment}, "


class SystemdManager:
    """A deployment's rendered units under systemd (system or ``--user`` manager).

    ``scope`` is the deployment's ``systemd.scope`` (None: read from the rendered target's
    ``WantedBy=``); ``unit_dir`` where units are installed (default by scope); ``run`` runs a
    command and captures its output (systemctl), ``popen`` starts one whose stdout is read
    (journalctl); ``fd`` is where the prefixed lines go. Tests pass fakes for all three."""

    name = "systemd"
    renders: str | None = "systemd"

    def __init__(self, scope: str | None = None, unit_dir: Path | None = None, run: Run = _run,
                 popen: Popen = _popen, fd: int = 1, which: Callable[[str], str | None] = shutil.which,
                 vendor_dirs: Mapping[str, tuple[Path, ...]] = VENDOR_DIRS) -> None:
        self.scope, self.unit_dir, self.run, self.popen, self.fd, self.which = scope, unit_dir, run, popen, fd, which
        self.vendor_dirs = vendor_dirs

    # -- what is where ---------------------------------------------------------------------

    def flavour(self, plan: Plan, files: Path) -> str:
        if self.scope is not None:
            return self.scope
        target = files / f"{plan['name']}.target"
        try:
            text = target.read_text()
        except OSError as exc:
            raise DreamError(f"{target}: cannot read the rendered target ({exc.strerror}); "
                             "run render:systemd first") from None
        return "user" if "WantedBy=default.target" in text else "system"

    def directory(self, scope: str) -> Path:
        if self.unit_dir is not None:
            return self.unit_dir
        return user_unit_dir() if scope == "user" else SYSTEM_UNITS

    def systemctl(self, scope: str, *args: str) -> list[str]:
        return [self.tool(SYSTEMCTL), *(["--user"] if scope == "user" else []), *args]

    def tool(self, name: str) -> str:
        found = self.which(name)
        if found is None:
            raise DreamError(f"{name} is not installed: run:systemd needs systemd (Debian's systemd package)")
        return found

    @staticmethod
    def rendered(plan: Plan, files: Path | None) -> list[str]:
        """The unit files and drop-in folders of the rendered folder, in a fixed order."""
        if files is None or not files.is_dir():
            raise DreamError("run:systemd needs the rendered units (render:systemd)")
        prefix = plan["name"]
        found = sorted(p.name for p in files.iterdir()
                       if p.name.startswith(prefix) and (p.name.endswith(UNIT_SUFFIXES) or p.name.endswith(".service.d")))
        if f"{prefix}.target" not in found:
            raise DreamError(f"{files}: no {prefix}.target; run render:systemd first")
        return found

    @staticmethod
    def units(plan: Plan, files: Path, names: list[str]) -> dict[str, str]:
        """Every unit that runs (instances named, templates not), with its log prefix."""
        d = plan["name"]
        wanted = []
        for line in (files / f"{d}.target").read_text().splitlines():
            if line.startswith("Wants="):
                wanted += line[len("Wants="):].split()
        labels: dict[str, str] = {}
        services = {f"{d}-{s['name']}": s["name"] for s in plan["services"]}
        for unit in wanted:
            base, _, instance = unit.removesuffix(".service").partition("@")
            if base == f"{d}-{PREPARE}":
                labels[unit] = "dream"
                continue
            service = services.get(base, base)
            label = f"{service}.{int(instance) + 1}" if instance.isdigit() else service
            labels[unit] = label
            check = f"{base}-liveness{'@' + instance if instance else ''}"
            if f"{base}-liveness{'@' if instance else ''}.service" in names:
                labels[f"{check}.timer"] = f"{label} liveness"
                labels[f"{check}.service"] = f"{label} liveness"
        return labels

    # -- up and down -----------------------------------------------------------------------

    def check(self, scope: str) -> None:
        """One line when no systemd manager answers (PID 1 is not systemd, no user bus)."""
        answer = self.run(self.systemctl(scope, "show", "--property=Version"))
        if answer.returncode == 0:
            return
        detail = (answer.stderr or answer.stdout).strip()
        if any(sign in detail for sign in NO_SYSTEMD):
            where = "the user's systemd (systemctl --user)" if scope == "user" else "systemd as PID 1"
            raise DreamError(f"systemctl: {detail.splitlines()[0]} run:systemd needs {where}; "
                             "the VM has it: doit run:vm")
        raise DreamError(f"systemctl: {last_line(detail)}")

    def install(self, plan: Plan, files: Path, names: list[str], directory: Path, scope: str) -> list[Path]:
        """Copy the units and drop-in folders into ``directory``; what was written. Refused
        where a file dream did not write is in the way, or a unit of the system's would be
        shadowed."""
        mark = marker(plan["name"])
        for name in names:
            for vendor in self.vendor_dirs.get(scope, ()):
                if vendor != directory and not name.endswith(".d") and (vendor / name).exists():
                    raise DreamError(f"{name} would shadow the system's unit {vendor / name}; rename the "
                                     "deployment")
            existing = directory / name
            if (files / name).is_dir():
                existing = existing / INSTANCE_DROP_IN
            if existing.exists() and not _starts_with(existing, mark):
                raise DreamError(f"{existing} exists and was not installed by dream for {plan['name']}; "
                                 "remove it or rename the deployment")
        written: list[Path] = []
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name in names:
                source, target = files / name, directory / name
                if source.is_dir():
                    target.mkdir(exist_ok=True)
                    for item in sorted(source.iterdir()):
                        shutil.copyfile(item, target / item.name)
                        written.append(target / item.name)
                else:
                    shutil.copyfile(source, target)
                    written.append(target)
        except OSError as exc:
            hint = " (installing system units needs root; or set `systemd: {scope: user}`)" \
                if exc.errno in (1, 13) else ""
            raise DreamError(f"cannot install {exc.filename or directory}: {exc.strerror}{hint}") from None
        return written

    def installed(self, plan: Plan, directory: Path) -> list[Path]:
        """The files in ``directory`` that dream installed for this deployment."""
        if not directory.is_dir():
            return []
        mark, found = marker(plan["name"]), []
        prefix = plan["name"]
        for entry in sorted(directory.iterdir()):
            if not entry.name.startswith(prefix):
                continue
            if entry.is_file() and entry.name.endswith(UNIT_SUFFIXES) and _starts_with(entry, mark):
                found.append(entry)
            elif entry.is_dir() and entry.name.endswith(".service.d"):
                drop_in = entry / INSTANCE_DROP_IN
                if drop_in.is_file() and _starts_with(drop_in, mark):
                    found.append(drop_in)
        return found

    def up(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Install, reload, follow the journal, start the target; on Ctrl-C (or any end), `down`."""
        names = self.rendered(plan, files)
        assert files is not None
        scope = self.flavour(plan, files)
        self.check(scope)
        labels = self.units(plan, files, names)
        self.install(plan, files, names, self.directory(scope), scope)
        interrupted, code = False, 0
        with signals_as_interrupt():
            try:
                code = self._reload(scope) or self._start(plan, scope, labels)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                print(f"dream: stopping {plan['name']}", file=sys.stderr, flush=True)
                down = through_interrupts(lambda: self.down(plan, files, root))
        return down if interrupted else (code or down)

    def _start(self, plan: Plan, scope: str, labels: Mapping[str, str]) -> int:
        """Follow the journal of every unit (from before the start), start the target, print."""
        journal = self.popen([self.tool(JOURNALCTL), *(["--user"] if scope == "user" else []),
                              "--follow", "--output=json", "--lines=0", *[f"--unit={unit}" for unit in labels]])
        try:
            started = self.run(self.systemctl(scope, "start", f"{plan['name']}.target"))
            if started.returncode:
                print(f"dream: systemctl start {plan['name']}.target: {last_line(started.stderr)}",
                      file=sys.stderr, flush=True)
                return started.returncode
            print(f"dream: {plan['name']}.target started; Ctrl-C stops it and removes its units",
                  file=sys.stderr, flush=True)
            return self.follow(journal, labels)
        finally:
            _end(journal)

    def follow(self, journal: subprocess.Popen[Any], labels: Mapping[str, str]) -> int:
        """Print the journal's lines with their service's prefix until it ends or Ctrl-C."""
        printer = Printer(sorted(set(labels.values())), fd=self.fd)
        stream: IO[str] | None = journal.stdout
        try:
            for raw in stream if stream is not None else []:
                line = journal_line(raw, labels)
                if line is not None:
                    printer.lines(line[0], [line[1].encode(errors="backslashreplace")])
            try:  # its output ended: it exits (an error of its own), or it is ended here
                ended = journal.wait(5)
            except subprocess.TimeoutExpired:
                ended = 0
        finally:
            _end(journal)
        return ended or 0

    def _reload(self, scope: str) -> int:
        done = self.run(self.systemctl(scope, "daemon-reload"))
        if done.returncode:
            print(f"dream: systemctl daemon-reload: {last_line(done.stderr)}", file=sys.stderr, flush=True)
        return done.returncode

    def down(self, plan: Plan, files: Path | None, root: Path) -> int:
        """Stop the target and every unit, forget failed ones, remove what was installed, reload."""
        if files is not None and (files / f"{plan['name']}.target").is_file():
            scope = self.flavour(plan, files)
        else:
            scope = self.scope or "system"
        directory = self.directory(scope)
        found = self.installed(plan, directory)
        units = _running_units(plan, files, found)
        code = 0
        stopped = self.run(self.systemctl(scope, "stop", f"{plan['name']}.target", *units))
        if stopped.returncode not in (0, NOT_LOADED):  # nothing of it loaded: nothing to stop
            print(f"dream: systemctl stop: {last_line(stopped.stderr)}", file=sys.stderr, flush=True)
            code = stopped.returncode
        self.run(self.systemctl(scope, "reset-failed", f"{plan['name']}.target", *units))
        for path in found:
            try:
                path.unlink()
                if path.name == INSTANCE_DROP_IN and not any(path.parent.iterdir()):
                    path.parent.rmdir()
            except OSError as exc:
                print(f"dream: cannot remove {path}: {exc.strerror}", file=sys.stderr, flush=True)
                code = code or 1
        return self._reload(scope) or code


def _running_units(plan: Plan, files: Path | None, found: list[Path]) -> list[str]:
    """The units to stop: each instance the rendered target wants, the non-template units
    installed, and each liveness timer (instances too)."""
    units: list[str] = []
    if files is not None and (files / f"{plan['name']}.target").is_file():
        names = SystemdManager.rendered(plan, files)
        units += [u for u in SystemdManager.units(plan, files, names) if u not in units]
    for path in found:
        name = path.name if path.name != INSTANCE_DROP_IN else path.parent.name.removesuffix(".d")
        if "@." not in name and not name.endswith(".target") and name not in units:
            units.append(name)
    return units


def journal_line(raw: str, labels: Mapping[str, str]) -> tuple[str, str] | None:
    """A ``journalctl -o json`` entry → (prefix, message); None for what is not shown: an
    entry of another unit, systemd's own "Starting/Finished" lines of a liveness check."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    unit = next((entry[k] for k in ("_SYSTEMD_UNIT", "_SYSTEMD_USER_UNIT", "UNIT", "USER_UNIT")
                 if isinstance(entry.get(k), str) and entry[k] in labels), None)
    if unit is None:
        return None
    label = labels[unit]
    from_systemd = entry.get("_PID") == "1" or entry.get("SYSLOG_IDENTIFIER") == "systemd"
    if from_systemd and label.endswith(" liveness"):
        return None
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # not UTF-8: journalctl gives the bytes
        text = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(errors="replace")
    elif isinstance(message, str):
        text = message
    else:
        return None
    return label, text.rstrip("\n")


def _end(process: subprocess.Popen[Any]) -> None:
    """Stop ``process`` (journalctl) if it still runs, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _starts_with(path: Path, text: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as stream:
            return stream.read(len(text)) == text
    except OSError:
        return False
