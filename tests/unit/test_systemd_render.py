"""The systemd renderer (dream.renderers.systemd) on plans built from recipe text and from the
real services-demo and gpu-image recipes: every mapping of the model, the header notes, and
systemd itself reading the units back.

Two real checks, both offline (no running systemd needed):
- ``systemd-analyze verify`` on every rendered unit (its exit code, and no complaint about one
  of our files on stderr: unknown keys and bad values are only warnings there);
- ``systemd --test --system|--user --unit=<d>.target``, which loads the units (and their
  drop-ins) as PID 1 would and dumps what it parsed: each command line's argv, each
  ``Environment=`` value, the timeouts. It refuses to run as root, so as root it runs as
  ``nobody``. The argv it dumps still holds ``$$`` (systemd turns it into ``$`` at exec time),
  so that is applied here; the commands are then run as systemd would run them (readiness
  waits, the liveness counter, the volume scripts).
"""

from __future__ import annotations

import http.server
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from dream.errors import DreamError
from dream.managers.host import read_env_files
from dream.recipe.load import load_recipe
from dream.recipe.model import Deployment
from dream.renderers.base import File, Target
from dream.renderers.systemd import PROBE_PY, SystemdRenderer, quoted, rendered_units, span
from dream.services.plan import build_plan
from dream.supervisor.output import Printer
from dream.supervisor.plan import plan_from_json
from dream.supervisor.supervisor import Supervisor
from tests.conftest import REPO, require

Unit = dict[str, list[Any]]

SHOP = """\
services:
  db:
    command: [sleep, infinity]
    ports: [6379]
    user: "1000:1000"
    volumes: [{path: var/lib/db, mode: "0700"}]
    readiness: {exec: [test, -e, ready], period: 200ms, timeout: 1.5, initial_delay: 2,
                failure_threshold: 5, success_threshold: 2}
    stop_signal: SIGQUIT
    stop_grace_period: 0
  migrate:
    command: [./migrate.sh, --all]
    oneshot: true
    restart: on-failure
    env_files: [conf/base.env]
    depends_on: {db: healthy}
  app:
    command: [python3, -m, app]
    working_dir: srv
    replicas: 2
    gpus: 1
    user: dev
    restart: on-failure
    max_restarts: 3
    backoff: 500ms
    max_backoff: 2
    stop_grace_period: 500ms
    env: {GREETING: hello}
    env_files: [conf/base.env, conf/app.env]
    volumes: [data, {path: cache, persistent: false}]
    config_files:
      - {path: app.ini, content: "x = 1\\n"}
      - {path: keys/secret.key, content: "k", mode: "0600"}
    readiness: {http: {path: /health}}
    liveness: {exec: "test -e \\"$DREAM_CONFIG_DIR/app.ini\\"", period: 5s, failure_threshold: 3}
    depends_on: {db: healthy, migrate: completed_successfully}
  worker:
    command: exec sleep infinity
    gpus: all
    restart: always
    max_restarts: 0
    stop_signal: SIGRTMIN+3
    volumes: [{path: cache/, persistent: false}]
    depends_on: [app]
    log_file: logs/worker.log
    allowed_to_exit: true
    liveness: {tcp: {port: 7000}, initial_delay: 1}
deployments:
  shop: {default: true, log_dir: logs/all, env: {STAGE: test}, port_base: 5000}
  alone:
    services: [db]
"""

TRICKY = ["plain", "", "two words", "dollar $HOME and ${HOME} and $$", "percent %n %% %",
          "double \" quote", "single ' quote", "back\\slash \\n \\\\", "new\nline", "tab\there",
          "cr\rhere", "bell\x07 del\x7f", "nel\x85 ls\u2028 é ✓", ";", "\\;", "-dash", "`tick`",
          "semi;colon", "@at", "+plus", "a=b", "${"]


def _project(root: Path, text: str = SHOP) -> dict[str, Deployment]:
    (root / "recipes").mkdir(parents=True, exist_ok=True)
    (root / "layers").mkdir(exist_ok=True)
    (root / "conf").mkdir(exist_ok=True)
    (root / "srv").mkdir(exist_ok=True)
    (root / "conf" / "base.env").write_text("BASE=1\n")
    (root / "conf" / "app.env").write_text("APP_ONLY=2\n")
    script = root / "migrate.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    path = root / "recipes" / "shop.yaml"
    path.write_text(text)
    return load_recipe(path, root).deployments


def _real(recipe: str, deployment: str) -> Deployment:
    return load_recipe(REPO / "recipes" / f"{recipe}.yaml", REPO).deployments[deployment]


def _render(project: Path, deployment: Deployment, **options: Any) -> list[File]:
    plan = build_plan(deployment)
    target = Target(project, project / "build" / deployment.name / "systemd",
                    env_files=read_env_files(plan, project), options=options)
    return SystemdRenderer().render(plan, target)


def _by_path(files: list[File]) -> dict[str, str]:
    return {f.path: f.content for f in files}


def _entries(text: str) -> list[tuple[str, str]]:
    """A unit file's ``Key=value`` lines, in order (comments and section headers left out)."""
    return [tuple(line.split("=", 1)) for line in text.splitlines()  # type: ignore[misc]
            if line and not line.startswith(("#", "[")) and "=" in line]


def _values(text: str, key: str) -> list[str]:
    return [v for k, v in _entries(text) if k == key]


def _header(text: str) -> list[str]:
    return [line[4:] for line in text.splitlines() if line.startswith("# - ")]


# -- systemd itself ----------------------------------------------------------------------------

def _systemd() -> str:
    """systemd's own binary (package systemd, with systemd-analyze): skip without it, fail in CI."""
    require("systemd-analyze")
    for candidate in ("/lib/systemd/systemd", "/usr/lib/systemd/systemd"):
        if os.access(candidate, os.X_OK):
            return candidate
    message = "systemd's binary (/lib/systemd/systemd) is not installed"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must have every real component)")
    pytest.skip(message)


def _write(folder: Path, files: list[File]) -> None:
    for file in files:
        path = folder / file.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file.content)
        path.chmod(file.mode)


def _units_only(files: list[File]) -> list[File]:
    return [f for f in files if f.path.split("/", 1)[0] in rendered_units(files)]


def _verify(files: list[File], scope: str = "system") -> None:
    """``systemd-analyze [--user] verify`` on every unit file and instance: exit code 0 and not
    one line about our units on stderr (bad keys and values are warnings with exit code 0)."""
    analyze = require("systemd-analyze")
    with tempfile.TemporaryDirectory(prefix="dream-verify-") as temp:
        folder = Path(temp) / "units"
        _write(folder, _units_only(files))
        runtime = Path(temp) / "runtime"
        runtime.mkdir(mode=0o700)
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        target = next(n for n in names if n.endswith(".target"))
        wanted = [w for line in (folder / target).read_text().splitlines() if line.startswith("Wants=")
                  for w in line[len("Wants="):].split()]
        done = subprocess.run(
            [analyze, *(["--user"] if scope == "user" else []), "verify", "--man=no", "--generators=no",
             *names, *[w for w in wanted if w not in names]],
            cwd=folder, capture_output=True, text=True, timeout=120,
            env={**os.environ, "XDG_RUNTIME_DIR": str(runtime), "SYSTEMD_LOG_COLOR": "0"})
        ours = [line for line in done.stderr.splitlines()
                if str(folder) in line or any(name.split("@")[0].split(".")[0] in line for name in names)]
        assert done.returncode == 0 and not ours, done.stderr


def _dump(files: list[File], unit: str, scope: str = "system") -> dict[str, Unit]:
    """What ``systemd --test`` parsed of every unit it loaded for ``unit``."""
    systemd = _systemd()
    with tempfile.TemporaryDirectory(prefix="dream-systemd-") as temp:
        base = Path(temp)
        base.chmod(0o755)
        folder = base / "units"
        _write(folder, _units_only(files))
        for path in [folder, *folder.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        runtime = base / "runtime"
        runtime.mkdir(mode=0o700)
        as_user: dict[str, Any] = {}
        if os.getuid() == 0:  # "Don't run test mode as root."
            nobody = pwd.getpwnam("nobody")
            os.chown(runtime, nobody.pw_uid, nobody.pw_gid)
            as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        done = subprocess.run([systemd, "--test", f"--{scope}", f"--unit={unit}"], cwd=base,
                              capture_output=True, timeout=120, **as_user,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(base),
                                   "SYSTEMD_UNIT_PATH": f"{folder}:", "XDG_RUNTIME_DIR": str(runtime)})
    output = done.stdout.decode(errors="replace")  # not text=True: that would read a \r as a line end
    assert done.returncode == 0, output[-3000:] + done.stderr.decode(errors="replace")
    units = _parse_dump(output)
    assert unit in units, output[-3000:] + done.stderr.decode(errors="replace")
    return units


def _parse_dump(text: str) -> dict[str, Unit]:
    """``-> Unit NAME:`` sections: each ``Key: value`` line (a list per key, an ``Environment``
    value continued over the lines it holds), each ``-> ExecX:`` as a list of argvs."""
    units: dict[str, Unit] = {}
    current: Unit | None = None
    command: str | None = None
    last: str | None = None
    for line in text.split("\n"):
        head = re.fullmatch(r"\t-> Unit (.+):", line)
        if head:
            current, command, last = units.setdefault(head.group(1), {}), None, None
            continue
        if current is None:
            continue
        if not line.startswith("\t"):
            if last == "Environment":
                current[last][-1] += "\n" + line
            continue
        exec_head = re.fullmatch(r"\t\t-> (Exec\w+):", line)
        if exec_head:
            command, last = exec_head.group(1), None
            current.setdefault(command, [])
            continue
        found = re.fullmatch(r"\t\t\tCommand Line: (.*)", line)
        if found and command:
            current[command].append(split_command_line(found.group(1)))
            continue
        field = re.fullmatch(r"\t\t([^\t:][^:]*): ?(.*)", line)
        if field:
            command, last = None, field.group(1)
            current.setdefault(last, []).append(field.group(2))
            continue
        last = None
    return units


C_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v"}


def split_command_line(text: str) -> list[str]:
    """systemd's ``quote_command_line`` output back to the argv the process gets: words, some in
    double quotes with ``\\`` escapes (``\\NNN`` octal bytes), then ``$$`` → ``$`` (exec time)."""
    words: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == " ":
            i += 1
        elif text[i] == '"':
            buffer, i = bytearray(), i + 1
            while text[i] != '"':
                if text[i] == "\\":
                    following = text[i + 1]
                    if following in "01234567":
                        buffer.append(int(text[i + 1:i + 4], 8))
                        i += 4
                        continue
                    buffer += C_ESCAPES.get(following, following.encode())
                    i += 2
                    continue
                buffer += text[i].encode()
                i += 1
            i += 1
            words.append(buffer.decode())
        else:
            end = text.find(" ", i)
            end = len(text) if end < 0 else end
            words.append(text[i:end])
            i = end
    return [w.replace("$$", "$") for w in words]


def _env(unit: Unit) -> dict[str, str]:
    return dict(item.split("=", 1) for item in unit.get("Environment", []))


def _supervisor_env(plan: dict[str, Any], root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    """What dream's supervisor gives each instance (by id, ``app.1``), from an empty environment."""
    with monkeypatch.context() as patch:
        patch.setattr(os, "environ", {})
        supervisor = Supervisor(plan_from_json(plan), root, Printer([], fd=2))
        try:
            return {inst.id: supervisor.environment(inst, None) for inst in supervisor.instances}
        finally:
            supervisor.loop.close()


# -- the real recipes ------------------------------------------------------------------------

def test_services_demo_db_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _real("services-demo", "db-app")
    out = tmp_path / "out"
    plan = build_plan(deployment)
    files = SystemdRenderer().render(plan, Target(REPO, out, env_files={}, options={}))
    assert [f.path for f in files] == ["db-app.target", "db-app-dream-prepare.service", "db-app-redis.service",
                                       "db-app-app.service", "config/app/counter.py"]
    text = _by_path(files)
    assert _values(text["db-app.target"], "Wants") == [
        "db-app-dream-prepare.service db-app-redis.service db-app-app.service"]
    assert _values(text["db-app.target"], "WantedBy") == ["multi-user.target"]
    app = text["db-app-app.service"]
    assert ("Requires", "db-app-redis.service") in _entries(app) and ("After", "db-app-redis.service") in _entries(app)
    assert _values(text["db-app-redis.service"], "ExecStartPost")  # redis' readiness gates the app
    assert _values(app, "Environment")[-2:] == [f"DREAM_CONFIG_DIR={out}/config/app", f"XDG_CONFIG_HOME={out}/config/app"]
    assert _values(text["db-app-dream-prepare.service"], "ExecStart") == [
        "/bin/sh -c \"[ -d \\\"$$1\\\" ] || install -d -m \\\"$$2\\\" \\\"$$1\\\"\" dream-volume "
        f"{REPO}/data/redis 0700"]
    _verify(files)
    units = _dump(files, "db-app.target")
    expected = _supervisor_env(plan, REPO, monkeypatch)
    for inst, unit in (("redis.1", "db-app-redis.service"), ("app.1", "db-app-app.service")):
        env = expected[inst]
        if "DREAM_CONFIG_DIR" in env:
            env["DREAM_CONFIG_DIR"] = env["XDG_CONFIG_HOME"] = f"{out}/config/app"
        assert _env(units[unit]) == env
        service = next(s for s in plan["services"] if f"{s['name']}.1" == inst)
        assert units[unit]["ExecStart"] == [service["argv"]]
        assert units[unit]["KillMode"] == ["control-group"]
    assert units["db-app-app.service"]["TimeoutStartSec"] == ["43s"]
    assert units["db-app-redis.service"]["Restart"] == ["on-failure"]


def test_gpu_image_deployment(tmp_path: Path) -> None:
    deployment = _real("gpu-image", "gpu-image")
    files = SystemdRenderer().render(build_plan(deployment), Target(REPO, tmp_path / "out", options={"root": "/"}))
    text = _by_path(files)
    notebook = text["gpu-image-notebook.service"]
    assert ("User", "dev") in _entries(notebook) and ("User", "root") in _entries(text["gpu-image-sshd.service"])
    env = _values(notebook, "Environment")
    assert "CUDA_VISIBLE_DEVICES=0" in env and "PORT=8888" in env and "PORT=5100" not in env  # its env wins
    assert _values(notebook, "WorkingDirectory") == ["/"]
    assert _values(text["gpu-image-dream-prepare.service"], "ExecStart")[-1] == "/bin/chown dev: /data/workspace"
    assert "gpu-image-notebook-liveness.timer" in text and "gpu-image-notebook-liveness.service" in text
    assert ("Wants", "gpu-image-notebook-liveness.timer") in _entries(notebook)
    _verify(files)
    units = _dump(files, "gpu-image.target")
    assert _env(units["gpu-image-notebook.service"])["CUDA_VISIBLE_DEVICES"] == "0"
    assert units["gpu-image-notebook.service"]["User"] == ["dev"]
    timer = units["gpu-image-notebook-liveness.timer"]
    assert timer["BindsTo"] == ["gpu-image-notebook.service (origin-file)"]


# -- every field ------------------------------------------------------------------------------

def test_every_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment = _project(tmp_path)["shop"]
    plan = build_plan(deployment)
    files = _render(tmp_path, deployment)
    out = tmp_path / "build" / "shop" / "systemd"
    assert [f.path for f in files] == [
        "shop.target", "shop-dream-prepare.service", "shop-db.service", "shop-migrate.service",
        "shop-app@.service", "shop-app@0.service.d/dream-instance.conf", "shop-app@1.service.d/dream-instance.conf",
        "shop-app-liveness@.timer", "shop-app-liveness@.service",
        "shop-app-liveness@0.service.d/dream-instance.conf", "shop-app-liveness@1.service.d/dream-instance.conf",
        "shop-worker.service", "shop-worker-liveness.timer", "shop-worker-liveness.service",
        "config/app/app.ini", "config/app/keys/secret.key"]
    assert [f.mode for f in files if f.path.startswith("config/")] == [0o644, 0o600]
    text = _by_path(files)
    assert _values(text["shop.target"], "Wants") == [
        "shop-dream-prepare.service shop-db.service shop-migrate.service shop-app@0.service shop-app@1.service "
        "shop-worker.service"]

    db = _entries(text["shop-db.service"])
    assert ("User", "1000") in db and ("Group", "1000") in db
    assert ("KillSignal", "SIGQUIT") in db and ("TimeoutStopSec", "1us") in db
    assert ("Restart", "no") in db and not _values(text["shop-db.service"], "RestartSec")
    assert ("TimeoutStartSec", "19s") in db  # 2 + 7 × (200ms + 1.5s) + 5, rounded up

    migrate = _entries(text["shop-migrate.service"])
    assert ("Type", "oneshot") in migrate and ("RemainAfterExit", "yes") in migrate
    assert ("Restart", "on-failure") in migrate and ("StartLimitBurst", "6") in migrate
    assert ("ExecStart", f"{tmp_path}/migrate.sh --all") in migrate
    assert ("EnvironmentFile", f"{tmp_path}/conf/base.env") in migrate
    assert ("Requires", "shop-db.service") in migrate and ("TimeoutStartSec", "infinity") in migrate

    app = text["shop-app@.service"]
    entries = _entries(app)
    assert ("Requires", "shop-migrate.service") in entries and ("After", "shop-migrate.service") in entries
    assert ("Wants", "shop-app-liveness@%i.timer") in entries
    assert ("StartLimitBurst", "4") in entries and ("StartLimitIntervalSec", "10s") in entries
    assert ("RestartSec", "500ms") in entries and ("TimeoutStopSec", "500ms") in entries
    assert ("RestartForceExitStatus", "SIGHUP SIGINT SIGTERM SIGPIPE") in entries
    assert ("WorkingDirectory", f"{tmp_path}/srv") in entries
    assert _values(app, "EnvironmentFile") == [f"{tmp_path}/conf/base.env", f"{tmp_path}/conf/app.env"]
    assert "PORT=5200" not in app  # each instance's own, in its drop-in
    drop_in = text["shop-app@1.service.d/dream-instance.conf"]
    assert _values(drop_in, "Environment") == ["PORT=5201", "CUDA_VISIBLE_DEVICES=1", "DREAM_INSTANCE=app.2"]
    assert _values(drop_in, "StandardOutput") == [f"append:{tmp_path}/logs/all/app.2.log"]

    worker = _entries(text["shop-worker.service"])
    assert ("KillSignal", "SIGRTMIN+3") in worker and ("StartLimitIntervalSec", "0") in worker
    assert ("StandardOutput", f"append:{tmp_path}/logs/worker.log") in worker and ("StandardError", "inherit") in worker
    assert ("Wants", "shop-app@0.service shop-app@1.service") in worker
    assert not any(k == "Environment" and v.startswith("CUDA") for k, v in worker)  # gpus: all
    timer = _entries(text["shop-worker-liveness.timer"])
    assert ("OnActiveSec", "1s") in timer and ("OnUnitActiveSec", "1s") in timer and ("BindsTo", "shop-worker.service") in timer

    prepare = _values(text["shop-dream-prepare.service"], "ExecStart")
    assert [p.split()[-2:] for p in prepare] == [
        [f"{tmp_path}/var/lib/db", "0700"], ["1000:1000", f"{tmp_path}/var/lib/db"],
        [f"{tmp_path}/data", "0755"], ["dev:", f"{tmp_path}/data"],
        [f"{tmp_path}/cache", "0755"], ["dev:", f"{tmp_path}/cache"], [f"{tmp_path}/cache", "0755"],
        ["-p", f"{tmp_path}/logs/all"], ["-p", f"{tmp_path}/logs"]]

    notes = _header(app)
    assert any("RestartSteps" in n and "max_backoff 2s" in n for n in notes)
    assert any(n.startswith("max_restarts 3: systemd gives up after 4 starts") for n in notes)
    assert any("EnvironmentFile= parser" in n for n in notes)
    assert any(n.startswith(f"config files are read where rendered ({out}/config/app)") and "owned by dev" in n
               for n in notes)
    assert any("its output goes to logs/all/app.<n>.log only" in n for n in notes)
    assert "a restart of db restarts this unit too (Requires=); dream restarts db alone" not in notes  # restart: no
    assert "a restart of app restarts this unit too (Requires=); dream restarts app alone" not in _header(
        text["shop-worker.service"])  # started: Wants=
    assert any("allowed_to_exit" in n for n in _header(text["shop.target"]))
    assert any("readiness is waited for at most TimeoutStartSec" in n for n in _header(text["shop-db.service"]))

    _verify(files)
    units = _dump(files, "shop.target")
    expected = _supervisor_env(plan, tmp_path, monkeypatch)
    instances = {"db.1": "shop-db.service", "migrate.1": "shop-migrate.service", "app.1": "shop-app@0.service",
                 "app.2": "shop-app@1.service", "worker.1": "shop-worker.service"}
    for inst, unit in instances.items():
        env = {k: v for k, v in expected[inst].items() if k not in ("BASE", "APP_ONLY")}  # EnvironmentFile=
        if "DREAM_CONFIG_DIR" in env:
            env["DREAM_CONFIG_DIR"] = env["XDG_CONFIG_HOME"] = f"{out}/config/app"
        assert _env(units[unit]) == env, unit
    assert units["shop-app@1.service"]["ExecStart"] == [["python3", "-m", "app"]]
    assert units["shop-app@1.service"]["StandardOutputFileToAppend"] == [f"{tmp_path}/logs/all/app.2.log"]
    assert units["shop-app@0.service"]["User"] == ["dev"]
    assert units["shop-app@0.service"]["RestartSec"] == ["500ms"]
    assert units["shop-migrate.service"]["ExecStart"] == [[f"{tmp_path}/migrate.sh", "--all"]]
    assert units["shop-db.service"]["KillSignal"] == ["SIGQUIT"]
    assert units["shop-worker.service"]["KillSignal"] == ["SIGRTMIN+3"]
    check = units["shop-app-liveness@1.service"]
    assert check["ExecStart"] == [["/bin/sh", "-c", 'test -e "$DREAM_CONFIG_DIR/app.ini"']]
    assert _env(check)["PORT"] == "5201" and check["User"] == ["dev"]
    assert check["ExecStopPost"][0][-2:] == ["/run/dream-shop-app@1.liveness", "shop-app@1.service"]


def test_user_flavour(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    files = _render(tmp_path, deployment, scope="user", config_dir="/etc/dream/shop/config", root="/srv/shop")
    text = _by_path(files)
    assert _values(text["shop.target"], "WantedBy") == ["default.target"]
    assert not _values(text["shop-app@.service"], "User") and not _values(text["shop-db.service"], "User")
    assert not any("chown" in line for line in _values(text["shop-dream-prepare.service"], "ExecStart"))
    assert any(n.startswith("runs as the user manager's user, not dev") for n in _header(text["shop-app@.service"]))
    assert "DREAM_CONFIG_DIR=/etc/dream/shop/config/app" in _values(text["shop-app@.service"], "Environment")
    assert "--user --no-block restart" in text["shop-app-liveness@.service"]
    assert "systemctl --user start shop.target" in text["shop.target"]
    files = _render(tmp_path, deployment, scope="user")  # verify checks the commands exist
    _verify(files, scope="user")
    units = _dump(files, "shop.target", scope="user")
    assert "User" not in units["shop-app@0.service"]
    assert units["shop-app@1.service"]["ExecStart"] == [["python3", "-m", "app"]]
    after = units["shop-app-liveness@0.service"]["ExecStopPost"][0]
    assert after[-1] == "shop-app@0.service" and after[-2].endswith("/runtime/dream-shop-app@0.liveness")
    assert "exec systemctl --user --no-block restart" in after[2]


# -- quoting ---------------------------------------------------------------------------------

def test_quoting_survives_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    env = {f"V{i}": value for i, value in enumerate(TRICKY)}
    recipe = ("services:\n  odd:\n    command: " + json.dumps(["/bin/echo", *TRICKY]) + "\n"
              "    env: " + json.dumps(env) + "\n"
              "    readiness: {exec: " + json.dumps(["/bin/sh", "-c", 'test "$V3" = "$1"', "probe", TRICKY[3]]) + "}\n"
              "  shell:\n    command: " + json.dumps("printf '%s\\n' \"$HOME\" 100% \\\\ 'it''s'") + "\n"
              "    args: " + json.dumps(TRICKY[:8]) + "\n")
    deployment = _project(tmp_path, recipe)["shop"]
    plan = build_plan(deployment)
    files = _render(tmp_path, deployment)
    _verify(files)
    units = _dump(files, "shop.target")
    odd, shell = units["shop-odd.service"], units["shop-shell.service"]
    assert odd["ExecStart"] == [["/bin/echo", *TRICKY]]
    assert shell["ExecStart"] == [plan["services"][1]["argv"]]
    dumped = _env(odd)
    assert {k: dumped[k] for k in env} == env
    expected = _supervisor_env(plan, tmp_path, monkeypatch)["odd.1"]
    assert dumped == expected
    assert odd["ExecStartPost"][0][-5:] == ["/bin/sh", "-c", 'test "$V3" = "$1"', "probe", TRICKY[3]]
    assert odd["Description"] == ["shop: odd (dream)"]


def test_paths_with_spaces_and_percent(tmp_path: Path) -> None:
    project = tmp_path / "my project 100%n"
    deployment = _project(project)["shop"]
    files = _render(project, deployment)
    _verify(files)
    units = _dump(files, "shop.target")
    assert units["shop-migrate.service"]["ExecStart"] == [[f"{project}/migrate.sh", "--all"]]
    assert units["shop-migrate.service"]["EnvironmentFile"] == [f"{project}/conf/base.env"]
    assert units["shop-app@0.service"]["WorkingDirectory"] == [f"{project}/srv"]
    assert units["shop-worker.service"]["StandardOutputFileToAppend"] == [f"{project}/logs/worker.log"]
    assert _env(units["shop-app@0.service"])["DREAM_CONFIG_DIR"] == f"{project}/build/shop/systemd/config/app"
    prepare = units["shop-dream-prepare.service"]["ExecStart"]
    assert prepare[0][-2:] == [f"{project}/var/lib/db", "0700"]


def test_quoted_words() -> None:
    assert quoted('a "b" \\ c', "x") == '"a \\"b\\" \\\\ c"'
    assert quoted("100% $X", "x") == '"100%% $$X"'
    assert quoted("100% $X", "x", dollar=False) == '"100%% $X"'
    assert quoted("\n\t\x01\x7f\x85\u2028é", "x") == '"\\n\\t\\x01\\x7f\\u0085\\u2028é"'
    with pytest.raises(DreamError, match="NUL"):
        quoted("a\0b", "service odd")
    assert [span(s) for s in (90, 1.5, 0.2, 0.00001, 0)] == ["90s", "1500ms", "200ms", "10us", "0s"]


# -- running what systemd parsed ----------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[int]:
    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _probes(port: int, good: str) -> str:
    return f"""\
services:
  web:
    command: [sleep, infinity]
    readiness: {{http: {{port: {port}, path: {good}}}, period: 10ms, timeout: 1, failure_threshold: 3}}
    liveness: {{tcp: {{port: {port}}}, period: 1s, failure_threshold: 2}}
    restart: on-failure
  flag:
    command: [sleep, infinity]
    readiness: {{exec: "test -e \\"$FLAG\\"", period: 10ms, failure_threshold: 4, success_threshold: 2}}
    env: {{FLAG: flag file}}
"""


def test_readiness_waits_run_as_parsed(tmp_path: Path, server: int) -> None:
    for path, passes in (("/health", True), ("/down", False)):
        files = _render(tmp_path, _project(tmp_path, _probes(server, path))["shop"])
        units = _dump(files, "shop.target")
        wait = units["shop-web.service"]["ExecStartPost"][0]
        done = subprocess.run(wait, capture_output=True, text=True, timeout=60)
        if passes:
            assert done.returncode == 0 and f"GET http://127.0.0.1:{server}/health answered 200" in done.stdout
        else:
            assert done.returncode == 1 and "not ready after 3 probes" in done.stderr, done.stderr
    check = units["shop-web-liveness.service"]["ExecStart"][0]
    assert subprocess.run(check, capture_output=True, timeout=60).returncode == 0
    closed = [*check[:5], str(_free_port()), *check[6:]]
    assert check[3:5] == ["tcp", "127.0.0.1"]
    failed = subprocess.run(closed, capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "tcp 127.0.0.1:" in failed.stderr

    flag = units["shop-flag.service"]
    env = {**os.environ, **_env(flag)}
    (tmp_path / "flag file").unlink(missing_ok=True)
    missing = subprocess.run(flag["ExecStartPost"][0], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "not ready after 4 probes" in missing.stderr
    (tmp_path / "flag file").write_text("")
    assert subprocess.run(flag["ExecStartPost"][0], cwd=tmp_path, env=env, timeout=60).returncode == 0


def test_liveness_counter_restarts_after_the_threshold(tmp_path: Path, server: int) -> None:
    files = _render(tmp_path, _project(tmp_path, _probes(server, "/health"))["shop"])
    after = _dump(files, "shop.target")["shop-web-liveness.service"]["ExecStopPost"][0]
    assert after[-2:] == ["/run/dream-shop-web.liveness", "shop-web.service"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.log\n")
    (bin_dir / "systemctl").chmod(0o755)
    counter = tmp_path / "counter"
    argv = [*after[:-2], str(counter), after[-1]]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def check(result: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env={**env, "SERVICE_RESULT": result}, capture_output=True, text=True, timeout=30)

    assert check("exit-code").returncode == 0 and counter.read_text() == "1\n"
    assert check("success").returncode == 0 and not counter.exists()  # a pass starts the count again
    check("timeout")
    assert not (tmp_path / "systemctl.log").exists()
    second = check("exit-code")
    assert "failed its liveness probe 2 times: restarting it" in second.stderr
    assert (tmp_path / "systemctl.log").read_text() == "--no-block restart shop-web.service\n"
    assert not counter.exists()


def test_prepare_scripts_run_as_parsed(tmp_path: Path) -> None:
    recipe = """\
services:
  keep:
    command: [sleep, infinity]
    volumes: [{path: data/keep, mode: "0700"}, {path: data/tmp, persistent: false, mode: "0750"}]
    log_file: logs/keep.log
"""
    files = _render(tmp_path, _project(tmp_path, recipe)["shop"])
    commands = _dump(files, "shop.target")["shop-dream-prepare.service"]["ExecStart"]
    (tmp_path / "data" / "keep").mkdir(parents=True)
    (tmp_path / "data" / "keep" / "kept").write_text("1")
    (tmp_path / "data" / "tmp" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "tmp" / "sub" / "gone").write_text("1")
    (tmp_path / "data" / "tmp" / ".hidden").write_text("1")
    for argv in commands:
        subprocess.run(argv, check=True, timeout=30)
    assert (tmp_path / "data" / "keep" / "kept").exists()
    assert list((tmp_path / "data" / "tmp").iterdir()) == []
    assert stat.S_IMODE((tmp_path / "data" / "tmp").stat().st_mode) == 0o750
    assert (tmp_path / "logs").is_dir()
    shutil.rmtree(tmp_path / "data")
    for argv in commands:
        subprocess.run(argv, check=True, timeout=30)
    assert stat.S_IMODE((tmp_path / "data" / "keep").stat().st_mode) == 0o700
    (tmp_path / "data" / "tmp").rmdir()
    (tmp_path / "data" / "tmp").symlink_to(tmp_path / "data" / "keep")
    (tmp_path / "data" / "keep" / "kept").write_text("1")
    refused = subprocess.run(commands[1], capture_output=True, text=True, timeout=30)
    assert refused.returncode == 1 and "symlink; refusing to wipe it" in refused.stderr
    assert (tmp_path / "data" / "keep" / "kept").exists()


def test_the_python_probe_compiles() -> None:
    compile(PROBE_PY, "<probe>", "exec")


# -- errors and determinism -----------------------------------------------------------------------

def test_one_line_errors(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    with pytest.raises(DreamError, match="systemd scope 'global': choose one of system, user"):
        _render(tmp_path, deployment, scope="global")
    with pytest.raises(DreamError, match="systemd root 'srv' must be an absolute path"):
        _render(tmp_path, deployment, root="srv")
    with pytest.raises(DreamError, match="unknown option 'network'"):
        _render(tmp_path, deployment, network="host")
    clash = """\
services:
  app:
    command: [sleep, infinity]
    liveness: {tcp: {port: 1}}
  app-liveness:
    command: [sleep, infinity]
"""
    with pytest.raises(DreamError, match="would both be the unit shop-app-liveness.service"):
        _render(tmp_path, _project(tmp_path, clash)["shop"])
    taken = "services:\n  dream-prepare:\n    command: [sleep, infinity]\n"
    with pytest.raises(DreamError, match="'dream-prepare' is taken"):
        _render(tmp_path, _project(tmp_path, taken)["shop"])
    with pytest.raises(DreamError, match="control character"):
        _render(tmp_path / "new\nline", _project(tmp_path / "new\nline")["shop"])


def test_dependency_notes(tmp_path: Path) -> None:
    recipe = """\
services:
  setup: {command: [sleep, "1"], oneshot: true}
  long: {command: [sleep, infinity]}
  app:
    command: [sleep, infinity]
    depends_on: {setup: started, long: completed_successfully}
"""
    text = _by_path(_render(tmp_path, _project(tmp_path, recipe)["shop"]))
    notes = _header(text["shop-app.service"])
    assert "waits for setup (started) to finish: systemd orders After= a oneshot's end, not its start" in notes
    assert "waits for long to start, not to complete successfully (only a oneshot's end can be ordered)" in notes
    assert ("Wants", "shop-setup.service") in _entries(text["shop-app.service"])
    assert ("Requires", "shop-long.service") in _entries(text["shop-app.service"])
    restarting = recipe.replace("long: {command: [sleep, infinity]}", "long: {command: [sleep, infinity], restart: always}")
    assert "a restart of long restarts this unit too (Requires=); dream restarts long alone" in _header(
        _by_path(_render(tmp_path, _project(tmp_path, restarting)["shop"]))["shop-app.service"])
    assert "shop-dream-prepare.service" not in text  # nothing to prepare
    for special in ("network", "multi-user", "systemd", "systemd-x"):
        with pytest.raises(DreamError, match="would shadow systemd's own"):
            _render(tmp_path, _project(tmp_path, recipe.replace("services:", f"deployments: {{{special}: {{}}}}\nservices:"))[special])


def test_env_file_clash_is_noted(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    (tmp_path / "conf" / "app.env").write_text("GREETING=from the file\nDREAM_SERVICE=x\n")
    notes = _header(_by_path(_render(tmp_path, deployment))["shop-app@.service"])
    assert "env file conf/app.env sets DREAM_SERVICE, GREETING, which therefore win over the service's own values here" in notes


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    deployment = _project(tmp_path)["shop"]
    assert _render(tmp_path, deployment) == _render(tmp_path, deployment)
    assert _render(tmp_path, _project(tmp_path)["alone"])[0].path == "alone.target"
