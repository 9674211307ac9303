"""`run:systemd` (dream/managers/systemd.py): what it installs and removes, the systemctl and
journalctl command lines in order, the journal's lines with their service prefixes, Ctrl-C, and
its one line where no systemd runs — with fakes, and with the real systemctl of this machine
(whose PID 1 is not systemd)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dream.errors import DreamError
from dream.managers.systemd import SystemdManager, journal_line
from dream.recipe.load import load_recipe
from dream.renderers.base import Target
from dream.renderers.systemd import SystemdRenderer
from dream.services.plan import build_plan
from tests.conftest import require

RECIPE = """\
services:
  db:
    command: [sleep, infinity]
    volumes: [data]
  web:
    command: [sleep, infinity]
    replicas: 2
    liveness: {tcp: {port: 7000}}
    depends_on: [db]
"""
NO_SYSTEMD = ("System has not been booted with systemd as init system (PID 1). Can't operate.\n"
              "Failed to connect to bus: Host is down\n")


class Journal:
    """A fake ``journalctl -f`` process: its lines, then (optionally) a Ctrl-C."""

    def __init__(self, lines: list[str], interrupt: bool = False) -> None:
        self.lines, self.interrupt = lines, interrupt
        self.returncode: int | None = None
        self.terminated = False
        self.stdout = self

    def __iter__(self) -> Any:
        yield from self.lines
        if self.interrupt:
            raise KeyboardInterrupt
        self.returncode = 0  # the fake journalctl ends with its lines

    def poll(self) -> int | None:
        return self.returncode

    def terminate(self) -> None:
        self.terminated = True
        self.returncode = -15

    def kill(self) -> None:
        self.returncode = -9

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = 0
        return self.returncode


class Fake:
    """Records every command; answers like a running systemd (or like none)."""

    def __init__(self, journal: Journal, systemd: bool = True, failing: str = "") -> None:
        self.journal, self.systemd, self.failing = journal, systemd, failing
        self.commands: list[list[str]] = []

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.commands.append(argv)
        if not self.systemd:
            return subprocess.CompletedProcess(argv, 1, "", NO_SYSTEMD)
        if self.failing and self.failing in argv:
            return subprocess.CompletedProcess(argv, 1, "", f"Job for {self.failing} failed.\n")
        return subprocess.CompletedProcess(argv, 0, "Version=252\n" if "show" in argv else "", "")

    def popen(self, argv: list[str]) -> Any:
        self.commands.append(argv)
        return self.journal


def entry(unit: str, message: Any, **fields: Any) -> str:
    return json.dumps({"_SYSTEMD_UNIT": unit, "MESSAGE": message, "_PID": "42", **fields})


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "layers").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text(RECIPE)
    deployment = load_recipe(tmp_path / "recipes" / "demo.yaml", tmp_path).deployments["demo"]
    plan = build_plan(deployment)
    out = tmp_path / "build" / "demo" / "systemd"
    for file in SystemdRenderer().render(plan, Target(tmp_path, out)):
        (out / file.path).parent.mkdir(parents=True, exist_ok=True)
        (out / file.path).write_text(file.content)
    return plan, out


def manager(fake: Fake, units: Path, output: Path, scope: str | None = None) -> SystemdManager:
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    return SystemdManager(scope=scope, unit_dir=units, run=fake.run, popen=fake.popen, fd=fd,
                          which=lambda name: f"/usr/bin/{name}", vendor_dirs={})


UNITS = ["demo-dream-prepare.service", "demo-db.service", "demo-web@0.service", "demo-web-liveness@0.timer",
         "demo-web-liveness@0.service", "demo-web@1.service", "demo-web-liveness@1.timer",
         "demo-web-liveness@1.service"]


def test_up_installs_starts_follows_and_takes_down(tmp_path: Path, rendered: tuple[dict[str, Any], Path]) -> None:
    plan, files = rendered
    units, output = tmp_path / "etc-units", tmp_path / "out.txt"
    journal = Journal([
        entry("demo-db.service", "Ready to accept connections"),
        entry("demo-web@1.service", "listening"),
        json.dumps({"_SYSTEMD_UNIT": "init.scope", "UNIT": "demo-web@0.service", "_PID": "1",
                    "MESSAGE": "Started demo-web@0.service - demo: web (dream)."}),
        json.dumps({"_SYSTEMD_UNIT": "init.scope", "UNIT": "demo-web-liveness@0.service", "_PID": "1",
                    "MESSAGE": "Starting demo-web-liveness@0.service..."}),
        entry("demo-web-liveness@0.service", "liveness probe failed (1/30)"),
        entry("other.service", "not ours"),
        entry("demo-db.service", [104, 105, 255]),
        "not json",
    ])
    fake = Fake(journal)
    seen: list[list[str]] = []

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        if "start" in argv:  # the units are in place by the time the target starts
            seen.append(sorted(p.name for p in units.iterdir()))
        return fake.run(argv)

    chosen = manager(fake, units, output)
    chosen.run = run
    assert chosen.up(plan, files, tmp_path) == 0
    assert seen == [["demo-db.service", "demo-dream-prepare.service", "demo-web-liveness@.service",
                     "demo-web-liveness@.timer", "demo-web@.service", "demo-web@0.service.d",
                     "demo-web@1.service.d", "demo.target"]]
    assert [c[1:] for c in fake.commands] == [
        ["show", "--property=Version"],
        ["daemon-reload"],
        ["--follow", "--output=json", "--lines=0", *[f"--unit={u}" for u in UNITS]],
        ["start", "demo.target"],
        ["stop", "demo.target", *UNITS],
        ["reset-failed", "demo.target", *UNITS],
        ["daemon-reload"]]
    assert fake.commands[2][0] == "/usr/bin/journalctl" and fake.commands[0][0] == "/usr/bin/systemctl"
    assert list(units.iterdir()) == []  # every file and drop-in folder removed
    lines = [line.split(" ", 1)[1] for line in output.read_text().splitlines()]
    assert lines == ["db             | Ready to accept connections",
                     "web.2          | listening",
                     "web.1          | Started demo-web@0.service - demo: web (dream).",
                     "web.1 liveness | liveness probe failed (1/30)",
                     "db             | hi\ufffd"]
    assert journal.returncode is not None


def test_ctrl_c_takes_the_deployment_down(tmp_path: Path, rendered: tuple[dict[str, Any], Path]) -> None:
    plan, files = rendered
    journal = Journal([entry("demo-db.service", "up")], interrupt=True)
    fake = Fake(journal)
    units = tmp_path / "units"
    assert manager(fake, units, tmp_path / "out.txt").up(plan, files, tmp_path) == 0
    assert [c[1] for c in fake.commands if c[0].endswith("systemctl")][-3:] == ["stop", "reset-failed", "daemon-reload"]
    assert journal.terminated and list(units.iterdir()) == []


def test_a_failed_start_is_taken_down_with_its_code(tmp_path: Path, rendered: tuple[dict[str, Any], Path]) -> None:
    plan, files = rendered
    fake = Fake(Journal([]), failing="demo.target")
    code = manager(fake, tmp_path / "units", tmp_path / "out.txt").up(plan, files, tmp_path)
    assert code == 1
    assert ["stop", "demo.target", *UNITS] in [c[1:] for c in fake.commands]
    assert fake.journal.terminated


def test_no_systemd_is_one_line_before_anything_is_installed(tmp_path: Path,
                                                             rendered: tuple[dict[str, Any], Path]) -> None:
    plan, files = rendered
    fake = Fake(Journal([]), systemd=False)
    units = tmp_path / "units"
    with pytest.raises(DreamError) as caught:
        manager(fake, units, tmp_path / "out.txt").up(plan, files, tmp_path)
    assert str(caught.value) == ("systemctl: System has not been booted with systemd as init system (PID 1). "
                                 "Can't operate. run:systemd needs systemd as PID 1; the VM has it: doit run:vm")
    assert "\n" not in str(caught.value) and not units.exists()
    assert len(fake.commands) == 1


def test_the_real_systemctl_without_systemd(tmp_path: Path, rendered: tuple[dict[str, Any], Path]) -> None:
    systemctl = require("systemctl")
    if subprocess.run([systemctl, "show", "--property=Version"], capture_output=True).returncode == 0:
        SystemdManager().check("system")  # systemd runs here (PID 1): the check passes, no line to show
        return
    plan, files = rendered
    units = tmp_path / "units"
    with pytest.raises(DreamError, match=r"^systemctl: System has not been booted with systemd .* doit run:vm$"):
        SystemdManager(unit_dir=units).up(plan, files, tmp_path)
    assert not units.exists()


def test_user_scope_from_the_target_and_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "layers").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text(RECIPE)
    plan = build_plan(load_recipe(tmp_path / "recipes" / "demo.yaml", tmp_path).deployments["demo"])
    out = tmp_path / "rendered"
    for file in SystemdRenderer().render(plan, Target(tmp_path, out, options={"scope": "user"})):
        (out / file.path).parent.mkdir(parents=True, exist_ok=True)
        (out / file.path).write_text(file.content)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    fake = Fake(Journal([]))
    fd = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT)
    chosen = SystemdManager(run=fake.run, popen=fake.popen, fd=fd, which=lambda n: n, vendor_dirs={})
    seen: list[bool] = []
    original = fake.run

    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        if "start" in argv:
            seen.append((tmp_path / "xdg" / "systemd" / "user" / "demo.target").is_file())
        return original(argv)

    chosen.run = run
    assert chosen.up(plan, out, tmp_path) == 0
    assert seen == [True]
    assert all(c[1] == "--user" for c in fake.commands)
    assert fake.commands[3][:3] == ["systemctl", "--user", "start"]


def test_refuses_to_overwrite_or_shadow(tmp_path: Path, rendered: tuple[dict[str, Any], Path]) -> None:
    plan, files = rendered
    units = tmp_path / "units"
    units.mkdir()
    (units / "demo-db.service").write_text("[Service]\nExecStart=/bin/true\n")
    fake = Fake(Journal([]))
    with pytest.raises(DreamError, match=r"demo-db.service exists and was not installed by dream for demo"):
        manager(fake, units, tmp_path / "out.txt").up(plan, files, tmp_path)
    assert (units / "demo-db.service").read_text().startswith("[Service]")
    (units / "demo-db.service").unlink()
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "demo.target").write_text("")
    shadowing = manager(fake, units, tmp_path / "out.txt")
    shadowing.vendor_dirs = {"system": (vendor,)}
    with pytest.raises(DreamError, match=r"demo.target would shadow the system's unit"):
        shadowing.up(plan, files, tmp_path)


def test_down_removes_only_this_deployments_files(tmp_path: Path, rendered: tuple[dict[str, Any], Path]) -> None:
    plan, files = rendered
    units = tmp_path / "units"
    units.mkdir()
    (units / "demo-old.service").write_text("# Deployment demo, service old: rendered by dream\n")  # an earlier render
    (units / "demo-x-db.service").write_text("# Deployment demo-x, service db: rendered by dream\n")
    (units / "demo-mine.service").write_text("[Service]\n")
    (units / "demo-web@0.service.d").mkdir()
    (units / "demo-web@0.service.d" / "dream-instance.conf").write_text("# Deployment demo, service web\n")
    (units / "demo-web@0.service.d" / "local.conf").write_text("[Service]\n")
    fake = Fake(Journal([]))
    assert manager(fake, units, tmp_path / "out.txt").down(plan, files, tmp_path) == 0
    assert sorted(p.name for p in units.rglob("*")) == ["demo-mine.service", "demo-web@0.service.d",
                                                         "demo-x-db.service", "local.conf"]
    assert fake.commands[0][1:] == ["stop", "demo.target", *UNITS, "demo-old.service"]


def test_journal_lines() -> None:
    labels = {"d-a.service": "a", "d-a-liveness.service": "a liveness"}
    assert journal_line(entry("d-a.service", "hello\n"), labels) == ("a", "hello")
    assert journal_line(json.dumps({"_SYSTEMD_USER_UNIT": "d-a.service", "MESSAGE": "x"}), labels) == ("a", "x")
    assert journal_line(json.dumps({"USER_UNIT": "d-a.service", "MESSAGE": "y", "_PID": "1"}), labels) == ("a", "y")
    assert journal_line(json.dumps({"UNIT": "d-a-liveness.service", "MESSAGE": "Finished", "_PID": "1"}), labels) is None
    assert journal_line(json.dumps({"_SYSTEMD_UNIT": "d-a.service", "MESSAGE": None}), labels) is None
    assert journal_line("[1, 2]", labels) is None and journal_line("{", labels) is None


def test_missing_rendering_is_one_line(tmp_path: Path) -> None:
    fake = Fake(Journal([]))
    with pytest.raises(DreamError, match=r"run:systemd needs the rendered units \(render:systemd\)"):
        manager(fake, tmp_path / "u", tmp_path / "o").up({"name": "demo", "services": []}, None, tmp_path)
    with pytest.raises(DreamError, match="no demo.target"):
        manager(fake, tmp_path / "u", tmp_path / "o").up({"name": "demo", "services": []}, tmp_path, tmp_path)
