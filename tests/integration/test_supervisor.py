"""dream's supervisor with real processes, driven the way users drive it: a recipe with
`services:`, loaded and planned by dream, then `python -m dream.supervisor plan.json --root R`.

Nothing is mocked. Every supervised process inherits ``DREAM_TEST_RUN`` (a token unique to the
test) from the supervisor, so each test can check that nothing it started outlives the
supervisor, and the fixture kills anything left over whatever happened.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dream.recipe.load import load_recipe
from dream.services.plan import build_plan, plan_json
from tests.conftest import REPO

pytestmark = pytest.mark.integration

LINE = re.compile(r"^(\d\d:\d\d:\d\d) (\S+) *\| ?(.*)$")


@dataclass
class Line:
    at: float      # time.monotonic() when the test read it
    name: str      # the prefix: a service, `web.1`, or `dream` for the supervisor itself
    text: str


def _proc_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    """True for a live process, False for one that is gone or a zombie."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


def processes_with(token: str, where: str = "environ") -> list[int]:
    """Live processes whose /proc/<pid>/<where> (``environ`` or ``cmdline``) holds ``token``."""
    me = os.getpid()
    needle = token.encode()
    return [pid for pid in _proc_pids()
            if pid != me and needle in _read(f"/proc/{pid}/{where}") and _alive(pid)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_base(offsets: tuple[int, ...]) -> int:
    """A port P with P + each offset free on 127.0.0.1 (for port_base tests)."""
    for _ in range(50):
        base = free_port()
        if base + max(offsets) > 65535:
            continue
        try:
            for offset in offsets:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range")


class Supervised:
    """One `python -m dream.supervisor` run: its output, read line by line as it comes."""

    def __init__(self, root: Path, plan: Path, token: str) -> None:
        self.root = root
        env = {**os.environ, "DREAM_TEST_RUN": token, "PY": sys.executable, "NO_COLOR": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO)] + ([os.environ["PYTHONPATH"]]
                                                            if os.environ.get("PYTHONPATH") else []))}
        env.pop("HONCHO_PROCESS_NAME", None)
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "dream.supervisor", str(plan), "--root", str(root)],
                                     cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        self.raw: list[str] = []
        self.lines: list[Line] = []
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stderr = ""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            text = raw.decode(errors="replace").rstrip("\n")
            now = time.monotonic()
            with self.changed:
                self.raw.append(text)
                match = LINE.match(text)
                if match:
                    self.lines.append(Line(now, match.group(2), match.group(3)))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "\n".join(self.raw)

    def wait_for(self, pattern: str, name: str | None = None, count: int = 1, timeout: float = 5.0) -> list[Line]:
        """The first ``count`` lines (of ``name``, if given) matching ``pattern``; fails after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                found = [l for l in self.lines if (name is None or l.name == name) and regex.search(l.text)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0 or (not self.reader.is_alive() and self.proc.poll() is not None):
                    raise AssertionError(f"no {count} line(s) matching {pattern!r} within {timeout}s:\n"
                                         + "\n".join(self.raw))
                self.changed.wait(min(left, 0.1))

    def wait(self, timeout: float = 5.0) -> int:
        """The exit code, failing the test if the supervisor is still running after ``timeout``."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the supervisor still runs after {timeout}s:\n{self.output}") from None
        self.reader.join(5)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read().decode(errors="replace")
        return code

    def named(self, name: str) -> list[Line]:
        with self.changed:
            return [l for l in self.lines if l.name == name]

    def texts(self, name: str) -> list[str]:
        return [l.text for l in self.named(name)]

    def index(self, name: str, pattern: str) -> int:
        """Position in the whole output of the first line of ``name`` matching ``pattern``."""
        regex = re.compile(pattern)
        with self.changed:
            for i, line in enumerate(self.lines):
                if line.name == name and regex.search(line.text):
                    return i
        raise AssertionError(f"no {name} line matching {pattern!r}:\n{self.output}")

    def signal(self, number: int) -> None:
        self.proc.send_signal(number)


class Harness:
    """Writes a project in tmp_path, plans a deployment with dream and runs the supervisor."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = (tmp_path / "project").resolve()
        (self.root / "recipes").mkdir(parents=True)
        (self.root / "layers").mkdir()
        self.token = f"dreamtest-{uuid.uuid4().hex}"
        self.runs: list[Supervised] = []

    def recipe(self, text: str, name: str = "demo", deployment: str | None = None) -> Path:
        """Write ``recipes/<name>.yaml``, plan ``deployment`` (default: the implicit one named
        like the recipe) into ``plan.json``, and return the plan's path."""
        path = self.root / "recipes" / f"{name}.yaml"
        path.write_text(text)
        recipe = load_recipe(path, self.root)
        plan = build_plan(recipe.deployments[deployment or name])
        target = self.root / "plan.json"
        target.write_text(plan_json(plan))
        return target

    def file(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def start(self, plan: Path) -> Supervised:
        run = Supervised(self.root, plan, self.token)
        self.runs.append(run)
        return run

    def run(self, text: str, timeout: float = 8.0, **kwargs: str) -> tuple[Supervised, int]:
        """Plan and run to the end; the supervisor's exit code."""
        run = self.start(self.recipe(text, **kwargs))
        code = run.wait(timeout)
        self.assert_nothing_left()
        return run, code

    def assert_nothing_left(self) -> None:
        left = processes_with(self.token)
        assert not left, f"processes left behind: {[_read(f'/proc/{p}/cmdline') for p in left]}"

    def cleanup(self) -> None:
        for run in self.runs:
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGTERM)
                try:
                    run.proc.wait(3)
                except subprocess.TimeoutExpired:
                    run.proc.kill()
                    run.proc.wait()
        for pid in processes_with(self.token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.cleanup()


# -- 1. dependency order and readiness gating --------------------------------------------------

ORDER = """\
services:
  init:
    oneshot: true
    command: |
      echo "init begin"; echo init >> events.log
      sleep 0.2
      echo "init end"
  db:
    depends_on: {init: completed_successfully}
    command: |
      echo "db up"; echo db-up >> events.log
      sleep 0.6
      echo "db making file"; echo db-file >> events.log
      touch db.ready
      exec sleep 30
    readiness:
      exec: test -e db.ready
      period: 100ms
  app:
    depends_on:
      init: completed_successfully
      db: healthy
    command: |
      echo app-start >> events.log
      if test -e db.ready; then echo "app start, file exists"; else echo "app start, no file"; fi
"""


def test_start_order_follows_dependencies_and_readiness(harness: Harness) -> None:
    run, code = harness.run(ORDER)
    out = run.output
    assert code == 0, out
    # the processes' own lines, in the order the supervisor printed them
    order = [run.index("init", "^init begin$"), run.index("init", "^init end$"),
             run.index("db", "^db up$"), run.index("db", "^db making file$"),
             run.index("app", "^app start")]
    assert order == sorted(order), out
    assert run.texts("app") == ["app start, file exists"], out
    # and in the order they happened, as the processes themselves recorded it
    assert (harness.root / "events.log").read_text().split() == ["init", "db-up", "db-file", "app-start"]
    # the supervisor waited for the probe: app began well after db said it was up
    db_up = run.wait_for("^db up$", "db")[0].at
    app_start = run.wait_for("^app start", "app")[0].at
    assert app_start - db_up >= 0.5, out
    assert run.index("dream", r"^db is ready") < run.index("dream", r"^app started"), out
    assert run.index("dream", r"^init completed$") < run.index("dream", r"^db started"), out
    # app's end (not allowed to exit, code 0) ended the deployment without an error
    assert "app exited with code 0: stopping the deployment" in out
    assert "stopped (exit code 0)" in out


# -- 2. restarts with a growing backoff, then giving up ------------------------------------------

CRASHER = """\
  crasher:
    command: |
      echo start >> crashes.log
      exec "$PY" -c 'import time; print("crash start", time.monotonic(), flush=True); raise SystemExit(3)'
    restart: on-failure
    backoff: 100ms
    max_backoff: 10s
    max_restarts: 3
"""


def _start_times(run: Supervised) -> list[float]:
    return [float(line.split()[2]) for line in run.texts("crasher") if line.startswith("crash start")]


def test_crashing_service_backs_off_then_gives_up_and_fails_the_deployment(harness: Harness) -> None:
    run, code = harness.run("services:\n" + CRASHER + "  steady:\n    command: exec sleep 30\n")
    out = run.output
    starts = _start_times(run)
    assert len(starts) == 4, out   # the first run and 3 restarts
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, delay in zip(gaps, (0.1, 0.2, 0.4)):
        assert delay <= gap < delay + 0.5, (gaps, out)   # the delay runs from the exit to the next start
    assert gaps[0] < gaps[1] < gaps[2], (gaps, out)
    for n, delay in ((1, "0.10"), (2, "0.20"), (3, "0.40")):
        assert f"crasher exited with code 3; restart {n}/3 in {delay}s" in out
    assert "crasher gave up after 3 restarts (last: exited with code 3)" in out
    assert "steady stopped (killed by SIGTERM)" in out
    assert code == 1, out


def test_a_service_allowed_to_exit_gives_up_without_ending_the_deployment(harness: Harness) -> None:
    # worker waits until the 4th crash, then a little longer: it still runs after the give-up
    worker = """\
  worker:
    command: |
      while [ "$(wc -l < crashes.log 2>/dev/null || echo 0)" -lt 4 ]; do sleep 0.05; done
      sleep 0.3
      echo "worker done"
"""
    run, code = harness.run("services:\n" + CRASHER + "    allowed_to_exit: true\n" + worker)
    out = run.output
    assert len(_start_times(run)) == 4, out
    assert run.index("dream", "^crasher gave up after 3 restarts") < run.index("worker", "^worker done$"), out
    assert "worker exited with code 0: stopping the deployment" in out
    assert code == 0, out


def test_restart_always_restarts_a_clean_exit(harness: Harness) -> None:
    run, code = harness.run("""\
services:
  loop:
    command: echo "loop ran"
    restart: always
    backoff: 100ms
    max_restarts: 2
""")
    assert run.texts("loop") == ["loop ran"] * 3, run.output
    assert "loop gave up after 2 restarts (last: exited with code 0)" in run.output
    assert code == 1


# -- 3. a stop that the service ignores ------------------------------------------------------------

CHILD = """\
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
tag = sys.argv[1]
if sys.argv[2:] == ["escape"]:
    if os.fork():
        os._exit(0)      # the parent goes: the child is an orphan ...
    os.setsid()          # ... in a session and process group of its own
os.write(1, f"{tag} pid {os.getpid()} pgid {os.getpgrp()}\\n".encode())  # one write: no interleaving
time.sleep(60)
"""


def test_sigterm_stops_everything_within_the_grace_period(harness: Harness) -> None:
    marker = harness.token
    harness.file("child.py", CHILD)
    plan = harness.recipe(f"""\
services:
  stubborn:
    stop_grace_period: 1s
    command: |
      trap '' TERM
      "$PY" child.py {marker}-child &
      "$PY" child.py {marker}-escaped escape &
      sh -c '"$PY" child.py {marker}-grandchild & wait' &
      echo "stubborn {marker} up"
      wait
""")
    run = harness.start(plan)
    lines = {}
    for tag in ("child", "escaped", "grandchild"):
        text = run.wait_for(f"^{marker}-{tag} pid ", "stubborn")[0].text
        lines[tag] = [int(word) for word in text.split()[2::2]]  # pid, pgid
    run.wait_for("up$", "stubborn")
    service_pid = int(run.wait_for(r"^stubborn started \(pid (\d+)\)", "dream")[0].text.split()[3].rstrip(")"))
    assert lines["escaped"][1] == lines["escaped"][0] != service_pid   # it left the service's group
    assert lines["child"][1] == service_pid
    before = processes_with(marker, "cmdline")
    assert len(before) >= 5, before   # sh, its two children, the inner sh and its child, the escapee

    sent = time.monotonic()
    run.signal(signal.SIGTERM)
    code = run.wait(timeout=1.0 + 1.0)
    took = time.monotonic() - sent
    out = run.output
    assert code == 0, out
    assert took >= 0.9, (took, out)       # SIGTERM was ignored: the grace period ran out first
    assert "SIGTERM received: stopping" in out
    assert "stubborn did not stop within 1s: SIGKILL" in out
    assert processes_with(marker, "cmdline") == [], out
    assert not any(_alive(pid) for pid in before + [pids[0] for pids in lines.values()])
    harness.assert_nothing_left()


# -- 4. readiness that never comes -----------------------------------------------------------------

def test_readiness_that_never_passes_fails_promptly(harness: Harness) -> None:
    port = free_port()
    plan = harness.recipe(f"""\
services:
  db:
    command: exec sleep 30
    readiness:
      tcp: {{port: {port}}}
      period: 100ms
      timeout: 200ms
      failure_threshold: 5
  app:
    command: echo "app ran"
    depends_on: {{db: healthy}}
""")
    run = harness.start(plan)
    code = run.wait(timeout=5)
    harness.assert_nothing_left()
    out = run.output
    assert code == 1, out
    assert time.monotonic() - run.started < 4, out
    assert "db not ready after 5 probes (" in out and "Connection refused): stopping it" in out, out
    assert "app was not started (dependency db can never be healthy: db not ready after 5 probes" in out
    assert "app ran" not in out and "app started" not in out


# -- 5. ports, env files, config files, volumes, logs, liveness, signals, exit codes ---------------

def test_replicas_get_honcho_ports_and_probes_use_them(harness: Harness) -> None:
    base = free_port_base((0, 1, 100))
    run, code = harness.run(f"""\
deployments:
  dev:
    port_base: {base}
services:
  web:
    replicas: 2
    command: |
      echo "web $DREAM_INSTANCE port $PORT"
      exec "$PY" -c 'import os, socket, time; s = socket.socket(); s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(); time.sleep(30)'
    readiness:
      tcp: {{}}
      period: 100ms
  client:
    depends_on: {{web: healthy}}
    command: |
      echo "client $DREAM_INSTANCE port $PORT"
      "$PY" -c 'import socket, sys; [socket.create_connection(("127.0.0.1", p), timeout=2).close() for p in map(int, sys.argv[1:])]; print("client reached", len(sys.argv) - 1)' {base} {base + 1}
""", deployment="dev")
    out = run.output
    assert run.texts("web.1") == [f"web web.1 port {base}"], out
    assert run.texts("web.2") == [f"web web.2 port {base + 1}"], out
    assert run.texts("client") == [f"client client.1 port {base + 100}", "client reached 2"], out
    assert run.index("dream", "^web.1 is ready") < run.index("dream", "^client started"), out
    assert run.index("dream", "^web.2 is ready") < run.index("dream", "^client started"), out
    assert code == 0, out


def test_env_files_are_read_when_the_service_starts(harness: Harness) -> None:
    harness.file("base.env", "# defaults\nexport BASE=static\nSHARED=from-base\nQUOTED='a $b # c'\n")
    run, code = harness.run("""\
services:
  gen:
    oneshot: true
    command: printf 'GREETING="hello from gen"\\nSHARED=from-file\\n' > run.env
  app:
    depends_on: {gen: completed_successfully}
    env_files: [base.env, run.env]
    env: {SHARED: from-service}
    command: |
      echo "greeting=$GREETING shared=$SHARED base=$BASE quoted=$QUOTED"
""")
    out = run.output
    assert run.texts("app") == ["greeting=hello from gen shared=from-service base=static quoted=a $b # c"], out
    assert code == 0, out


def test_a_missing_or_malformed_env_file_is_a_clear_could_not_start(harness: Harness) -> None:
    harness.file("bad.env", "GOOD=1\nthis is not an assignment\n")
    run, code = harness.run("""\
services:
  missing:
    env_files: [missing.env]
    command: echo "missing ran"
    allowed_to_exit: true
  malformed:
    env_files: [bad.env]
    command: echo "malformed ran"
""")
    out = run.output
    missing = harness.root / "missing.env"
    assert f"missing could not start (env file {missing}: No such file or directory)" in out
    assert f"malformed could not start ({harness.root / 'bad.env'}:2: expected KEY=value)" in out
    assert "ran" not in "\n".join(run.texts("missing") + run.texts("malformed"))
    assert "Traceback" not in out + run.stderr
    assert code == 1, out


def test_config_files_are_written_fresh_into_dream_config_dir(harness: Harness) -> None:
    harness.file("recipes/files/other.txt", "from a src file\n")
    folder = harness.root / ".dream" / "run" / "demo" / "config" / "app"
    harness.file(str(folder.relative_to(harness.root) / "stale.txt"), "from an earlier run\n")
    run, code = harness.run("""\
services:
  app:
    config_files:
      - path: sub/app.conf
        content: "key = value\\n"
        mode: "0600"
      - path: other.txt
        src: files/other.txt
    command: |
      echo "dir=$DREAM_CONFIG_DIR"
      echo "xdg=$XDG_CONFIG_HOME"
      cat "$DREAM_CONFIG_DIR/sub/app.conf" "$DREAM_CONFIG_DIR/other.txt"
      stat -c 'mode=%a' "$DREAM_CONFIG_DIR/sub/app.conf"
      ls "$DREAM_CONFIG_DIR"
""")
    out = run.output
    assert run.texts("app") == [f"dir={folder}", f"xdg={folder}", "key = value", "from a src file",
                                "mode=600", "other.txt", "sub"], out
    assert not (folder / "stale.txt").exists()
    assert code == 0, out


def test_volumes_non_persistent_wiped_persistent_kept(harness: Harness) -> None:
    harness.file("data/keep.txt", "kept\n")
    harness.file("scratch/old.txt", "old\n")
    text = """\
services:
  app:
    volumes:
      - data
      - {path: scratch, persistent: false}
      - {path: fresh/new, mode: "0700"}
    command: |
      echo "data: $(ls data | tr '\\n' ' ')"
      echo "scratch: $(ls scratch | tr '\\n' ' ')"
      stat -c 'fresh=%a' fresh/new
      touch data/run-$$ scratch/run-$$
"""
    first, code = harness.run(text)
    assert code == 0, first.output
    assert first.texts("app") == ["data: keep.txt ", "scratch: ", "fresh=700"], first.output
    second, code = harness.run(text)
    assert code == 0, second.output
    data, scratch, _ = second.texts("app")
    assert data.startswith("data: keep.txt run-") and scratch == "scratch: ", second.output
    assert (harness.root / "data" / "keep.txt").read_text() == "kept\n"
    assert len(list((harness.root / "scratch").iterdir())) == 1   # only the second run's file


def test_log_dir_and_log_file_receive_raw_lines(harness: Harness) -> None:
    run, code = harness.run("""\
deployments:
  dev:
    log_dir: logs
services:
  a:
    replicas: 2
    oneshot: true
    command: printf 'one %s\\ntwo\\nno newline' "$DREAM_INSTANCE"
  b:
    log_file: own/b.log
    command: |
      echo "b says | hi"
      echo "to stderr" >&2
""", deployment="dev")
    assert code == 0, run.output
    logs = harness.root / "logs"
    assert (logs / "a.1.log").read_text() == "one a.1\ntwo\nno newline\n"
    assert (logs / "a.2.log").read_text() == "one a.2\ntwo\nno newline\n"
    assert (harness.root / "own" / "b.log").read_text() == "b says | hi\nto stderr\n"
    assert not (logs / "b.1.log").exists()
    assert run.texts("a.1") == ["one a.1", "two", "no newline"]


HTTP_SERVER = """\
  web:
    command: exec "$PY" -m http.server --bind 127.0.0.1 "$PORT"
    readiness:
      http: {path: %s}
      period: 50ms
      failure_threshold: %d
  client:
    depends_on: {web: healthy}
    command: echo "client ran"
"""


def test_http_readiness_passes_on_200_and_fails_on_404(harness: Harness) -> None:
    base = free_port_base((0,))
    deployments = f"deployments:\n  dev:\n    port_base: {base}\n"
    run, code = harness.run(deployments + "services:\n" + HTTP_SERVER % ("/", 100), deployment="dev")
    assert f"web is ready (GET http://127.0.0.1:{base}/ answered 200)" in run.output
    assert run.texts("client") == ["client ran"], run.output
    assert code == 0, run.output
    run, code = harness.run(deployments + "services:\n" + HTTP_SERVER % ("/nope", 12), deployment="dev")
    assert f"web not ready after 12 probes (GET http://127.0.0.1:{base}/nope answered 404)" in run.output
    assert "client ran" not in run.output
    assert code == 1, run.output


def test_a_hanging_exec_probe_times_out(harness: Harness) -> None:
    run, code = harness.run("""\
services:
  slow:
    command: exec sleep 30
    readiness:
      exec: exec sleep 30
      timeout: 200ms
      period: 50ms
      failure_threshold: 2
""")
    assert "slow not ready after 2 probes (/bin/sh -c exec sleep 30: timed out after 0.2s): stopping it" in run.output
    assert code == 1, run.output


def test_failed_readiness_restarts_under_the_policy_and_dependents_wait(harness: Harness) -> None:
    run, code = harness.run("""\
services:
  db:
    command: |
      echo run >> runs.log
      echo "db run $(wc -l < runs.log)"
      if [ "$(wc -l < runs.log)" -ge 2 ]; then touch ready.flag; fi
      exec sleep 30
    readiness:
      exec: test -e ready.flag
      period: 50ms
      failure_threshold: 3
    restart: on-failure
    backoff: 100ms
  app:
    depends_on: {db: healthy}
    command: echo "app ran"
""")
    out = run.output
    assert run.texts("db") == ["db run 1", "db run 2"], out
    assert "db not ready after 3 probes (then killed by SIGTERM); restart 1/5 in 0.10s" in out
    assert run.index("db", "^db run 2$") < run.index("app", "^app ran$"), out
    assert code == 0, out


def test_failing_liveness_restarts_the_service(harness: Harness) -> None:
    run, code = harness.run("""\
services:
  flaky:
    command: |
      echo "flaky start"
      exec sleep 30
    liveness:
      exec: test -e healthy.flag
      period: 100ms
      failure_threshold: 2
    restart: on-failure
    backoff: 100ms
    max_restarts: 1
""")
    out = run.output
    assert run.texts("flaky") == ["flaky start", "flaky start"], out
    assert "flaky failed its liveness probe 2 times (/bin/sh -c test -e healthy.flag: exited with code 1): stopping it" in out
    assert "restart 1/1 in 0.10s" in out
    assert "flaky gave up after 1 restarts" in out
    assert code == 1, out


def test_passing_liveness_keeps_the_service(harness: Harness) -> None:
    """The probe must run (each run leaves a line in probes.log), pass, and leave the service be."""
    harness.file("healthy.flag", "")
    plan = harness.recipe("""\
services:
  fine:
    command: |
      echo "fine start"
      exec sleep 30
    liveness:
      exec: test -e healthy.flag && echo ran >> probes.log
      period: 100ms
      failure_threshold: 2
    restart: on-failure
""")
    log = harness.root / "probes.log"
    run = harness.start(plan)
    run.wait_for("^fine start$", "fine")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 4):
        time.sleep(0.05)
    run.signal(signal.SIGTERM)
    assert run.wait(3) == 0
    assert log.exists() and len(log.read_text().splitlines()) >= 4, run.output
    assert run.texts("fine") == ["fine start"], run.output
    assert "liveness" not in run.output


def test_sigint_stops_cleanly_with_exit_code_0(harness: Harness) -> None:
    plan = harness.recipe("""\
services:
  web:
    command: |
      echo "web up"
      exec sleep 30
  polite:
    stop_signal: SIGINT
    command: |
      trap 'echo "polite got INT"; exit 0' INT
      echo "polite up"
      while :; do sleep 0.05; done
""")
    run = harness.start(plan)
    run.wait_for("^web up$", "web")
    run.wait_for("^polite up$", "polite")
    run.signal(signal.SIGINT)
    code = run.wait(3)
    harness.assert_nothing_left()
    out = run.output
    assert code == 0, out
    assert "SIGINT received: stopping" in out
    assert "web stopped (killed by SIGTERM)" in out
    assert "polite got INT" in out and "polite stopped (exited with code 0)" in out
    assert out.splitlines()[-1].endswith("stopped (exit code 0)")


def test_a_second_stop_signal_kills_at_once(harness: Harness) -> None:
    plan = harness.recipe("""\
services:
  stubborn:
    stop_grace_period: 20s
    command: |
      trap '' TERM
      echo "stubborn up"
      while :; do sleep 0.05; done
""")
    run = harness.start(plan)
    run.wait_for("^stubborn up$", "stubborn")
    run.signal(signal.SIGTERM)
    run.wait_for("^SIGTERM received: stopping$", "dream")
    time.sleep(0.3)
    assert run.proc.poll() is None, run.output       # still inside the 20 s grace period
    sent = time.monotonic()
    run.signal(signal.SIGINT)
    code = run.wait(3)
    assert time.monotonic() - sent < 2, run.output
    assert "SIGINT again: killing every process now" in run.output
    assert "stubborn stopped (killed by SIGKILL)" in run.output
    assert code == 0, run.output
    harness.assert_nothing_left()


def test_sighup_is_forwarded_to_the_services(harness: Harness) -> None:
    plan = harness.recipe("""\
services:
  hup:
    command: |
      trap 'echo "got HUP"' HUP
      echo "hup up"
      while :; do sleep 0.05; done
""")
    run = harness.start(plan)
    run.wait_for("^hup up$", "hup")
    run.signal(signal.SIGHUP)
    run.wait_for("^got HUP$", "hup")
    run.signal(signal.SIGTERM)
    assert run.wait(3) == 0, run.output
    harness.assert_nothing_left()


@pytest.mark.parametrize("content,reason", [
    (None, "No such file or directory"),
    ("{not json", "Expecting property name"),
    ('{"version": 99, "name": "x", "services": []}', "plan version 99 is not 1"),
    ('{"version": 1, "name": "x"}', "services"),
], ids=["missing", "bad-json", "wrong-version", "no-services"])
def test_an_unreadable_plan_exits_2(tmp_path: Path, content: str | None, reason: str) -> None:
    plan = tmp_path / "plan.json"
    if content is not None:
        plan.write_text(content)
    run = subprocess.run([sys.executable, "-m", "dream.supervisor", str(plan), "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=10, cwd=REPO, check=False)
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    line, = run.stderr.strip().splitlines()
    assert line.startswith(f"dream-supervisor: cannot read plan {plan}: ") and reason in line, line


def test_a_deployment_that_cannot_be_set_up_exits_2(harness: Harness) -> None:
    harness.file("blocker", "a file where a directory should go\n")
    run, code = harness.run("""\
services:
  app:
    volumes: [blocker/data]
    command: echo "app ran"
""")
    assert code == 2, run.output
    assert "cannot start deployment demo:" in run.output and "blocker/data" in run.output
    assert "app ran" not in run.output
