"""The supervisor: starts a plan's services in dependency order, gates on readiness, restarts
with exponential backoff, stops everything (process groups, then every descendant) on request.

States of an instance: waiting → running (→ ready) → backoff → running … → final. Final
instances are done for good: completed, failed, gave up, skipped (a dependency that can never
be met) or stopped. Exit codes: 0 all went well (every service finished, or a stop was asked
for and done); 1 a service failed (exited when it was not allowed to, gave up, or waited on a
dependency that can never be met); 2 the deployment could not be set up (volumes, config
files, log files, another run of it still going); 3 the supervisor itself failed (an unexpected
error: one line, the details in ``<runtime_dir>/supervisor-error.log``; every service is killed
first, never orphaned).

Nothing outlives it, even a SIGKILL of it: see runstate.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from . import runstate
from .dotenv import read_env_file
from .loop import Loop, Timer
from .output import LineSplitter, Printer
from .plan import ConfigFile, Plan, Probe, Service, Volume
from .probes import KEPT_OUTPUT, check_network, exec_once, exec_verdict, network_probe
from .procs import (
    Identity,
    become_subreaper,
    describe_status,
    identity_of,
    kill_descendants,
    reap,
    signal_group,
    spawn,
)
from .secrets import SECRETS_DIR_ENV, SecretError, give, host_directory
from .secrets import remove as remove_secrets

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)
HUP_WINDOW = 10.0  # seconds: a service killed by a SIGHUP forwarded this recently is started again
MIN_DELAY = 0.01   # the shortest restart delay, whatever the plan says (backoff: 0 spun)
STATE_FILE = "run-state.json"
ERROR_LOG = "supervisor-error.log"


class SetupError(Exception):
    pass


def restart_delay(service: Service, restarts: int) -> float:
    """``backoff`` × 2ⁿ⁻¹ up to ``max_backoff``, never under `MIN_DELAY`; the exponent is capped
    (``2 ** 1024`` overflowed a float after 1025 restarts with ``max_restarts: 0``)."""
    doubling = 2.0 ** min(max(restarts - 1, 0), 60)
    return max(MIN_DELAY, min(service.backoff * doubling, service.max_backoff))


def visible_gpus(service: Service, replica: int) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` of replica ``replica`` (from 1) of a service with ``gpus: N``:
    the N devices from (replica - 1) × N on, so replicas never share one (an engine that
    reserves N × replicas devices numbers them from 0 in the container). None for ``all``
    (every device stays visible) and for none."""
    if not isinstance(service.gpus, int):
        return None
    first = (replica - 1) * service.gpus
    return ",".join(str(device) for device in range(first, first + service.gpus))


def port_base(plan: Plan, environ: Mapping[str, str]) -> int:
    """The first process's PORT: the operator's ``PORT`` when the supervisor's own environment
    has one (``docker run -e PORT=5123``, ``PORT=5123 doit run:procfile``: honcho's and
    foreman's rule, as Cog's images read it), else the plan's ``port_base``; the other services
    and replicas follow it (100 more per service, 1 more per replica). ValueError for a PORT
    that is no port."""
    value = environ.get("PORT")
    if value is None or value.strip() == "":
        return plan.port_base
    text = value.strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"PORT={value!r} in the environment is not a port from 1 to 65535")
    last = int(text) + max([100 * s.index + s.replicas - 1 for s in plan.services], default=0)
    if last > 65535:
        raise ValueError(f"PORT={text} in the environment would give a process PORT={last}, above 65535")
    return int(text)


def write_files(folder: Path, items: list[ConfigFile], who: Identity | None) -> None:
    """Write ``items`` (config files, a volume's seed) below ``folder``; the files and the
    folders made for them belong to ``who`` when the supervisor is root."""
    for item in items:
        target = folder / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.content)
        os.chmod(target, item.mode)
        if who is not None and os.getuid() == 0:
            for part in [target, *target.relative_to(folder).parents]:
                os.chown(folder / part, who.uid, who.gid)


class Instance:
    """One running copy of a service (``web`` or, with replicas, ``web.1``, ``web.2`` …)."""

    def __init__(self, service: Service, replica: int, port: int) -> None:
        self.service = service
        self.replica = replica
        self.id = f"{service.name}.{replica}"
        self.name = service.name if service.replicas == 1 else self.id
        self.port = port
        self.state = "waiting"
        self.pid: int | None = None
        self.proc = None
        self.generation = 0
        self.started_once = False
        self.ready_once = False
        self.final = False
        self.failed = False
        self.outcome = ""
        self.reported = False
        self.restarts = 0
        self.started_at = 0.0
        self.stop_reason: str | None = None
        self.stop_detail = ""
        self.timers: list[Timer] = []
        self.probe_ok = 0
        self.probe_failed = 0
        self.splitter: LineSplitter | None = None
        self.hup_at = 0.0
        self.phase = "main"  # "pre_start" while the service's pre_start runs as its process
        self.secret_env: dict[str, str] = {}  # this start's secrets given as variables

    def probe_port(self, probe: Probe) -> int:
        return probe.port if probe.port is not None else self.port

    def cancel_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers = []


class Supervisor:
    def __init__(self, plan: Plan, root: Path, printer: Printer | None = None) -> None:
        self.plan = plan
        self.root = root
        self.loop = Loop()
        self.port_error = ""
        self.host_secrets: Path | None = None  # a host run's private folder for file secrets
        try:
            base = port_base(plan, os.environ)
        except ValueError as exc:
            base, self.port_error = plan.port_base, str(exc)
        self.instances = [Instance(s, r, base + 100 * s.index + r - 1)
                          for s in plan.services for r in range(1, s.replicas + 1)]
        self.by_service = {s.name: [i for i in self.instances if i.service is s] for s in plan.services}
        self.printer = printer or Printer([i.name for i in self.instances])
        self.children: dict[int, Callable[[int], None]] = {}
        self.probes: set[int] = set()
        self.identities: dict[str, Identity] = {}
        self.logs: dict[str, object] = {}
        self.stopping = False
        self.exit_code = 0
        self.done = False
        self.state_path: str | None = None
        self.watchdog: subprocess.Popen | None = None
        self.sessions: set[int] = set()
        self.recorded: set[tuple[int, int]] = set()
        self.state_written = self.state_checked = 0.0

    # -- running ---------------------------------------------------------------------------

    def run(self) -> int:
        old = self.loop.catch_signals(list(STOP_SIGNALS + FORWARDED_SIGNALS) + [signal.SIGCHLD])
        try:
            return self._run()
        except Exception as exc:  # the one boundary: a line, the details in a file, nothing orphaned
            self.crashed(exc)
            return 3
        finally:
            for number, handler in old.items():
                signal.signal(number, handler)  # type: ignore[arg-type]
            self.loop.close()
            for log in self.logs.values():
                try:
                    log.close()  # type: ignore[attr-defined]
                except OSError:
                    pass
            self.end_watch()
            if self.host_secrets is not None:
                remove_secrets(self.host_secrets)

    def _run(self) -> int:
        become_subreaper()
        try:
            if self.port_error:
                raise SetupError(self.port_error)
            self.guard()
            self.prepare()
        except SetupError as exc:
            self.say(f"cannot start deployment {self.plan.name}: {exc}")
            return 2
        self.say(f"deployment {self.plan.name}: {len(self.instances)} processes")
        self.update()
        while not self.done:
            self.loop.run_once(max_wait=1.0)
            for number in self.loop.take_signals():
                self.on_signal(number)
            for pid, status in reap():
                handler = self.children.pop(pid, None)
                if handler is not None:
                    handler(status)
            self.update()
            if not self.done:
                self.record()
        return self.exit_code

    def crashed(self, exc: BaseException) -> None:
        """An unexpected error: kill every process below us, say so in one line, keep the details."""
        for inst in self.running():
            signal_group(inst.pid, signal.SIGKILL)  # type: ignore[arg-type]
        spare = {self.watchdog.pid} if self.watchdog is not None else set()
        deadline = time.monotonic() + 2
        while runstate.clean({"pids": [], "sessions": sorted(self.sessions)}, frozenset(spare),
                             limit=runstate.now_ticks() + runstate.TICKS, rounds=1) or kill_descendants(os.getpid(), spare):
            reap()
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        reap()
        where = "stderr"
        details = "".join(traceback.format_exception(exc))
        try:
            folder = self.path(self.plan.runtime_dir)
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / ERROR_LOG, "a") as log:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} deployment {self.plan.name}\n{details}\n")
            where = str(folder / ERROR_LOG)
        except (OSError, ValueError):
            sys.stderr.write(details)
        self.say(f"internal error: {type(exc).__name__}: {exc} (details in {where}); "
                 "every service was killed (exit code 3)")

    # -- nothing outlives the supervisor (runstate.py) -----------------------------------------

    def guard(self) -> None:
        """Clean what a crashed run of this deployment left, refuse to run beside a live one,
        then start the watchdog and write the first run state. Not as PID 1 (the kernel kills
        everything with it there) nor where the runtime directory cannot be written."""
        if os.getpid() == 1:
            return
        folder = self.path(self.plan.runtime_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.say(f"cannot keep a run state in {folder} ({exc.strerror}): a SIGKILL of the "
                     "supervisor may leave services running")
            return
        path = str(folder / STATE_FILE)
        previous = runstate.read_state(path)
        if previous is not None:
            if runstate.alive(previous.get("supervisor")):
                raise SetupError(f"it already runs (supervisor pid {previous['supervisor'][0]}); stop that one first")
            killed = runstate.clean(previous)
            if killed:
                self.say(f"a crashed run of {self.plan.name} left {killed} processes: killed them")
        watcher = os.path.join(os.path.dirname(os.path.abspath(runstate.__file__)), "runstate.py")
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-I", watcher, path], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True, cwd="/")
        except OSError as exc:
            self.say(f"cannot start the watchdog ({exc.strerror}): a SIGKILL of the supervisor "
                     "may leave services running")
        self.state_path = path
        self.record(force=True)

    def record(self, force: bool = False) -> None:
        """Rewrite the run state when what runs below us changed (or every `REFRESH` seconds)."""
        if self.state_path is None:
            return
        now = time.monotonic()
        if not force and now - self.state_checked < 1.0:
            return
        spare = {self.watchdog.pid} if self.watchdog is not None else set()
        table = runstate.snapshot()
        current = {(pid, table[pid][3]) for pid in runstate.below(os.getpid(), table) if pid not in spare}
        self.state_checked = now
        if not force and current == self.recorded and now - self.state_written < runstate.REFRESH:
            return
        me = runstate.start_time(os.getpid())
        try:
            runstate.write_state(self.state_path, {
                "supervisor": [os.getpid(), me], "deployment": self.plan.name,
                "watchdog": self.watchdog.pid if self.watchdog is not None else None,
                "sessions": sorted(self.sessions), "pids": sorted(current)})
        except OSError:
            pass  # best effort: the leaders still die with us (PR_SET_PDEATHSIG)
        self.recorded = current
        self.state_written = now

    def spawned(self, pid: int) -> None:
        self.sessions.add(pid)
        self.record(force=True)

    def end_watch(self) -> None:
        """A clean end: tell the watchdog, wait for it, remove the run state."""
        if self.watchdog is not None:
            try:
                self.watchdog.stdin.write(b"done")  # type: ignore[union-attr]
                self.watchdog.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            try:
                self.watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()
            self.watchdog = None
        if self.state_path is not None:
            try:
                os.unlink(self.state_path)
            except OSError:
                pass
            self.state_path = None

    def say(self, message: str) -> None:
        self.printer.system(message)

    def on_signal(self, number: int) -> None:
        name = signal.Signals(number).name
        if number in STOP_SIGNALS:
            if self.stopping:
                self.say(f"{name} again: killing every process now")
                for inst in self.running():
                    signal_group(inst.pid, signal.SIGKILL)  # type: ignore[arg-type]
            else:
                self.shutdown(0, f"{name} received: stopping")
        elif number in FORWARDED_SIGNALS:  # to the services, not to a pre_start still running
            for inst in [i for i in self.running() if i.phase == "main"]:
                if number == signal.SIGHUP:
                    inst.hup_at = time.monotonic()
                signal_group(inst.pid, number)  # type: ignore[arg-type]

    def running(self) -> list[Instance]:
        return [i for i in self.instances if i.pid is not None]

    # -- setup -----------------------------------------------------------------------------

    def path(self, value: str) -> Path:
        return self.root / value if not os.path.isabs(value) else Path(value)

    def identity(self, service: Service) -> Identity | None:
        if service.user is None:
            return None
        if service.user not in self.identities:
            try:
                who = identity_of(service.user)
            except KeyError:
                raise SetupError(f"{service.name}: no such user or group in {service.user!r}") from None
            if os.getuid() != 0 and who.uid != os.getuid():
                raise SetupError(f"{service.name}: running as user {service.user} needs the supervisor "
                                 f"to run as root (it runs as uid {os.getuid()})")
            self.identities[service.user] = who
        return self.identities[service.user]

    def prepare(self) -> None:
        """Volumes (wiped when not persistent, created when missing), config files, log files."""
        try:
            for service in self.plan.services:
                try:
                    who = self.identity(service)
                except SetupError:
                    who = None  # reported when the service starts; the others can still run
                for volume in service.volumes:
                    path = self.path(volume.path)
                    if not volume.persistent and path.exists():
                        self.wipe(service, volume.path)
                        if path.is_dir():
                            os.chmod(path, volume.mode)  # as a new one would be
                    if not path.is_dir():
                        path.mkdir(parents=True, mode=volume.mode)
                        os.chmod(path, volume.mode)
                    if who is not None and os.getuid() == 0:
                        os.chown(path, who.uid, who.gid)
                    if volume.seed:
                        self.seed(service, volume, who)
                if service.config_files:
                    folder = self.config_dir(service)
                    if folder.exists():
                        shutil.rmtree(folder)
                    write_files(folder, service.config_files, who)
            for inst in self.instances:
                log = inst.service.log_file or (
                    f"{self.plan.log_dir}/{inst.id}.log" if self.plan.log_dir else None)
                if log and log not in self.logs:
                    path = self.path(log)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.logs[log] = open(path, "ab")
                inst.splitter = LineSplitter(self.logs.get(log) if log else None)  # type: ignore[arg-type]
        except OSError as exc:
            raise SetupError(f"{exc.filename or ''}: {exc.strerror}") from None
        except ValueError as exc:  # a NUL in a path, a config file's text that is no Unicode
            raise SetupError(str(exc)) from None

    def seed(self, service: Service, volume: Volume, who: Identity | None) -> None:
        """Copy a volume's seed files in when it is empty (just made, wiped, or a new empty
        mount); a volume that holds anything is left as it is, so nothing is ever overwritten.
        The files (and the folders made for them) belong to the service's user when the
        supervisor is root."""
        folder = self.path(volume.path)
        if any(folder.iterdir()):
            return
        write_files(folder, volume.seed, who)
        self.say(f"{service.name}: seeded volume {volume.path} ({len(volume.seed)} files)")

    def wipe(self, service: Service, value: str) -> None:
        """Empty a non-persistent volume: only a directory strictly below the deployment's root
        (symlinks resolved), never the root itself or anything outside it (the recipe loader
        refuses such paths too: dream/recipe/paths.py). Its contents go, the directory stays:
        in a container it is often a mount point (a Compose named volume), which cannot be
        removed (EBUSY)."""
        root, path = self.root.resolve(), self.path(value)
        target = path.resolve()
        if target == root or not target.is_relative_to(root):
            raise SetupError(f"{service.name}: volume {value!r} is not below the deployment's root "
                             f"{root} (resolves to {target}); refusing to wipe it")
        if path.is_symlink():
            raise SetupError(f"{service.name}: volume {value!r} is a symlink; refusing to wipe it")
        if not path.is_dir():
            path.unlink()
            return
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def workdir(self, service: Service) -> str:
        return str(self.path(service.working_dir)) if service.working_dir else str(self.root)

    def config_dir(self, service: Service) -> Path:
        return self.path(self.plan.runtime_dir) / "config" / service.name

    def environment(self, inst: Instance, who: Identity | None) -> dict[str, str]:
        """The supervisor's environment, then the deployment's, PORT, env files, the replica's
        GPUs, the service's."""
        service = inst.service
        env = dict(os.environ)
        env.update(self.plan.env)
        env["PORT"] = str(inst.port)
        for name in service.env_files:
            env.update(read_env_file(self.path(name)))
        devices = visible_gpus(service, inst.replica)
        if devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices
        env.update(service.env)
        if service.secrets:
            env[SECRETS_DIR_ENV] = str(self.secrets_folder())
            env.update(inst.secret_env)
        env.update(DREAM_DEPLOYMENT=self.plan.name, DREAM_SERVICE=service.name, DREAM_INSTANCE=inst.id)
        if service.config_files:
            env["DREAM_CONFIG_DIR"] = env["XDG_CONFIG_HOME"] = str(self.config_dir(service))
        if who is not None and who.uid != os.getuid():
            env.update(HOME=who.home, USER=who.name, LOGNAME=who.name)
        return env

    # -- the dependency gate ---------------------------------------------------------------

    @staticmethod
    def _condition(inst: Instance, condition: str) -> str:
        """'yes', 'no' (not yet) or 'never' for one instance of a dependency."""
        if condition == "started":
            met = inst.started_once
        elif condition == "healthy":
            met = inst.ready_once
        else:  # completed_successfully
            met = inst.final and not inst.failed
        return "yes" if met else ("never" if inst.final else "no")

    def gate(self, inst: Instance) -> tuple[str, str]:
        for name, condition in inst.service.depends_on.items():
            answers = [(self._condition(d, condition), d) for d in self.by_service[name]]
            for answer, dep in answers:
                if answer == "never":
                    return "never", (f"dependency {name} can never be "
                                     f"{condition.replace('_', ' ')}: {dep.name} {dep.outcome}")
            if any(answer == "no" for answer, _ in answers):
                return "no", ""
        return "yes", ""

    def update(self) -> None:
        """Start what may start, skip what never can, and end the run when it is over."""
        changed = True
        while changed and not self.done:
            changed = False
            if not self.stopping:
                for inst in self.instances:
                    if inst.state != "waiting":
                        continue
                    verdict, why = self.gate(inst)
                    if verdict == "yes":
                        self.start(inst)
                        changed = True
                    elif verdict == "never":
                        self.finish(inst, failed=True, outcome=f"was not started ({why})")
                        self.say(f"{inst.name} {inst.outcome}")
                        changed = True
                for inst in self.instances:
                    if inst.final and not inst.reported:
                        inst.reported = True
                        self.judge(inst)
            if not self.stopping and all(i.final for i in self.instances):
                failed = [i for i in self.instances if i.failed and not i.service.allowed_to_exit]
                self.exit_code = 1 if failed else 0
                self.say("every service has finished" + (f"; failed: {', '.join(i.name for i in failed)}" if failed else ""))
                self.stopping = True
            if self.stopping and not self.running() and not self.probes:
                spare = {self.watchdog.pid} if self.watchdog is not None else set()
                leftovers = kill_descendants(os.getpid(), spare)
                if leftovers:
                    self.say(f"killed {leftovers} leftover processes")
                    deadline = time.monotonic() + 1
                    while kill_descendants(os.getpid(), spare) and time.monotonic() < deadline:
                        reap()
                        time.sleep(0.01)
                reap()
                self.say(f"stopped (exit code {self.exit_code})")
                self.done = True

    def judge(self, inst: Instance) -> None:
        """A service that may not exit has ended: the deployment ends with it."""
        service = inst.service
        if service.allowed_to_exit or (service.oneshot and not inst.failed):
            return
        self.shutdown(1 if inst.failed else 0, f"{inst.name} {inst.outcome}: stopping the deployment")

    def finish(self, inst: Instance, failed: bool, outcome: str) -> None:
        inst.cancel_timers()
        inst.state = "final"
        inst.final = True
        inst.failed = failed
        inst.outcome = outcome

    # -- starting and stopping ---------------------------------------------------------------

    def start(self, inst: Instance) -> None:
        """Start the instance: its secrets, its ``pre_start`` when it has one, then the service."""
        if not self.give_secrets(inst):
            return
        if inst.service.pre_start:
            self.run_pre_start(inst)
        else:
            self.launch(inst)

    def give_secrets(self, inst: Instance) -> bool:
        """Decrypt the service's secrets for this start (secrets.py). One that cannot be given
        (no identity, a wrong key, no age): this instance is not started and fails, and the
        deployment goes on without it, so one missing key does not take the others down."""
        service = inst.service
        if not service.secrets:
            return True
        try:
            who = self.identity(service)
        except SetupError:
            who = None  # the start itself reports it
        owner = (who.uid, who.gid) if who is not None else None
        try:
            inst.secret_env = give(service.secrets, os.environ, self.secrets_folder(), owner)
        except (SecretError, OSError) as exc:
            self.finish(inst, failed=True, outcome=f"was not started ({exc})")
            inst.reported = True  # judged here: the deployment does not stop for it
            self.say(f"{inst.name} {inst.outcome}")
            return False
        return True

    def secrets_folder(self) -> Path:
        """The plan's folder for file secrets (``/run/secrets`` in an image), or on the host a
        private one in memory for this run, removed when the supervisor ends."""
        if self.plan.secrets_dir:
            return Path(self.plan.secrets_dir)
        if self.host_secrets is None:
            self.host_secrets = host_directory(self.plan.name)
            os.chmod(self.host_secrets, 0o711)  # services of other users reach their own files
        return self.host_secrets

    def run_pre_start(self, inst: Instance) -> None:
        """Spawn the service's ``pre_start`` as the instance's process (so a stop reaches it),
        its output under the instance's name; `pre_start_ended` goes on from its exit."""
        assert inst.service.pre_start is not None
        proc = self.spawn_for(inst, inst.service.pre_start, "could not run its pre_start")
        if proc is None:
            return
        inst.proc, inst.pid = proc, proc.pid
        inst.phase = "pre_start"
        self.spawned(proc.pid)
        inst.state = "pre_start"
        inst.started_at = time.monotonic()  # a pre_start that fails at once is no long run
        self.children[proc.pid] = lambda status: self.pre_start_ended(inst, status)
        self.watch_output(inst, proc.stdout)  # type: ignore[arg-type]
        self.say(f"{inst.name} pre_start started (pid {proc.pid})")

    def pre_start_ended(self, inst: Instance, status: int) -> None:
        """Exit 0 starts the service; anything else is a failed start, under the restart policy."""
        code, words = describe_status(status)
        proc, pid = inst.proc, inst.pid
        assert proc is not None and pid is not None
        proc.returncode = code
        self.read_output(inst, proc.stdout, drain=True)  # type: ignore[arg-type]
        signal_group(pid, signal.SIGKILL)  # what it left behind in its group
        inst.cancel_timers()
        inst.pid = inst.proc = None
        inst.phase = "main"
        inst.stop_reason = None
        if self.stopping:
            self.finish(inst, failed=False, outcome=f"stopped in its pre_start ({words})")
            self.say(f"{inst.name} {inst.outcome}")
        elif code == 0:
            self.launch(inst)
        else:
            self.ended(inst, failed=True, words=f"pre_start {words}", reason="pre_start")

    def spawn_for(self, inst: Instance, argv: list[str], failure: str) -> subprocess.Popen[bytes] | None:
        """``argv`` spawned as ``inst``'s process (its user, environment and directory); None
        when it cannot be, the instance then failed with ``failure`` and the reason."""
        service = inst.service
        try:
            who = self.identity(service)
            return spawn(argv, self.environment(inst, who), self.workdir(service), who)
        except (OSError, ValueError, SetupError) as exc:  # ValueError: EnvFileError, a NUL
            detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.finish(inst, failed=True, outcome=f"{failure} ({detail})")
            self.say(f"{inst.name} {inst.outcome}")
            return None

    def launch(self, inst: Instance) -> None:
        service = inst.service
        proc = self.spawn_for(inst, service.argv, "could not start")
        if proc is None:
            return
        inst.proc, inst.pid = proc, proc.pid
        self.spawned(proc.pid)
        inst.generation += 1
        inst.state = "running"
        inst.started_once = True
        inst.started_at = time.monotonic()
        inst.probe_ok = inst.probe_failed = 0
        self.children[proc.pid] = lambda status: self.on_exit(inst, status)
        self.watch_output(inst, proc.stdout)  # type: ignore[arg-type]
        restarts = f", restart {inst.restarts}" if inst.restarts else ""
        self.say(f"{inst.name} started (pid {proc.pid}{restarts})")
        if service.readiness is not None and not service.oneshot:
            self.probe_later(inst, service.readiness, "readiness", service.readiness.initial_delay)
        else:
            inst.ready_once = True
            if service.liveness is not None:
                self.probe_later(inst, service.liveness, "liveness", service.liveness.initial_delay)

    def watch_output(self, inst: Instance, stream: BinaryIO) -> None:
        os.set_blocking(stream.fileno(), False)
        self.loop.add_reader(stream.fileno(), lambda: self.read_output(inst, stream))

    def read_output(self, inst: Instance, stream: BinaryIO, drain: bool = False) -> None:
        """Print what the pipe holds; ``drain`` reads until it is empty (at exit), otherwise one
        chunk per wake-up so that one chatty service cannot starve the others."""
        splitter = inst.splitter
        assert splitter is not None
        while not stream.closed:
            try:
                chunk = os.read(stream.fileno(), 65536)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self.loop.remove_reader(stream.fileno())
                stream.close()
                self.printer.lines(inst.name, splitter.close())
                return
            self.printer.lines(inst.name, splitter.feed(chunk))
            if not drain:
                return

    def on_exit(self, inst: Instance, status: int) -> None:
        code, words = describe_status(status)
        proc, pid = inst.proc, inst.pid
        assert proc is not None and pid is not None
        proc.returncode = code  # reaped here; keep Popen from waiting for it again
        self.read_output(inst, proc.stdout, drain=True)  # type: ignore[arg-type]
        signal_group(pid, signal.SIGKILL)  # what the service left behind in its group
        inst.cancel_timers()
        inst.pid = inst.proc = None
        reason, inst.stop_reason = inst.stop_reason, None
        if reason in ("readiness", "liveness"):
            words = f"{inst.stop_detail} (then {words})"
        service = inst.service
        if self.stopping:
            self.finish(inst, failed=False, outcome=f"stopped ({words})")
            self.say(f"{inst.name} {inst.outcome}")
            return
        if (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP and reason is None
                and time.monotonic() - inst.hup_at < HUP_WINDOW):
            inst.hup_at = 0.0  # SIGHUP means "reload": one that has no handler for it starts again
            self.say(f"{inst.name} ended on the forwarded SIGHUP: starting it again")
            self.start(inst)
            return
        failed = code != 0 or reason in ("readiness", "liveness")
        if service.oneshot and not failed:
            self.finish(inst, failed=False, outcome="completed")
            self.say(f"{inst.name} completed")
            return
        self.ended(inst, failed, words, reason)

    def ended(self, inst: Instance, failed: bool, words: str, reason: str | None) -> None:
        """A run (or a pre_start) ended and the deployment goes on: restart it under its policy
        with the backoff, or finish it."""
        service = inst.service
        restart = service.restart == "always" or (service.restart == "on-failure" and failed)
        if not restart:
            self.finish(inst, failed=failed, outcome=words)
            self.say(f"{inst.name} {words}")
            return
        if time.monotonic() - inst.started_at >= max(service.max_backoff, 1.0) and reason is None:
            inst.restarts = 0  # it ran long enough to count as healthy: start over with the backoff
        inst.restarts += 1
        if service.max_restarts and inst.restarts > service.max_restarts:
            self.finish(inst, failed=True, outcome=f"gave up after {service.max_restarts} restarts (last: {words})")
            self.say(f"{inst.name} {inst.outcome}")
            return
        delay = restart_delay(service, inst.restarts)
        limit = f"/{service.max_restarts}" if service.max_restarts else ""
        self.say(f"{inst.name} {words}; restart {inst.restarts}{limit} in {delay:.2f}s")
        inst.state = "backoff"

        def again() -> None:
            if not self.stopping and inst.state == "backoff":
                self.start(inst)

        inst.timers.append(self.loop.call_later(delay, again))

    def stop(self, inst: Instance, reason: str) -> None:
        """Stop signal to the instance's process group, SIGKILL after its grace period."""
        if inst.pid is None:
            return
        inst.cancel_timers()
        inst.stop_reason = reason
        service = inst.service
        signal_group(inst.pid, service.stop_signal)
        pid = inst.pid

        def kill() -> None:
            if inst.pid == pid:
                self.say(f"{inst.name} did not stop within {service.stop_grace_period:g}s: SIGKILL")
                signal_group(pid, signal.SIGKILL)

        inst.timers.append(self.loop.call_later(service.stop_grace_period, kill))

    def shutdown(self, code: int, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.exit_code = code
        self.say(reason)
        for inst in self.instances:
            if inst.pid is not None:
                self.stop(inst, "shutdown")
            elif not inst.final:
                self.finish(inst, failed=False, outcome="not started (stopping)")
        for pid in list(self.probes):
            signal_group(pid, signal.SIGKILL)

    # -- probes ----------------------------------------------------------------------------

    def probe_later(self, inst: Instance, probe: Probe, kind: str, delay: float) -> None:
        generation = inst.generation
        inst.timers.append(self.loop.call_later(delay, lambda: self.probe(inst, probe, kind, generation)))

    def probe(self, inst: Instance, probe: Probe, kind: str, generation: int) -> None:
        if self.stopping or inst.generation != generation or inst.pid is None or inst.stop_reason:
            return

        def done(ok: bool, detail: str) -> None:
            self.probed(inst, probe, kind, generation, ok, detail)

        if probe.kind == "exec":
            self.exec_probe(inst, probe, done)
        else:
            check_network(probe, inst.probe_port(probe), lambda ok, detail: self.loop.post(lambda: done(ok, detail)))

    def exec_probe(self, inst: Instance, probe: Probe, done: Callable[[bool, str], None]) -> None:
        service = inst.service
        try:
            who = self.identity(service)
            proc = spawn(probe.argv, self.environment(inst, who), self.workdir(service), who)
        except (OSError, ValueError, SetupError) as exc:
            done(False, f"cannot run {probe.argv[0]}: {exc}")
            return
        self.spawned(proc.pid)
        fd = proc.stdout.fileno()  # type: ignore[union-attr]
        os.set_blocking(fd, False)
        captured = bytearray()
        self.probes.add(proc.pid)
        timed_out = []

        def readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            if chunk:
                captured.extend(chunk)
                del captured[:-KEPT_OUTPUT]
            else:
                self.loop.remove_reader(fd)

        def timeout() -> None:
            timed_out.append(True)
            signal_group(proc.pid, signal.SIGKILL)

        timer = self.loop.call_later(probe.timeout, timeout)
        self.loop.add_reader(fd, readable)

        def exited(status: int) -> None:
            timer.cancel()
            self.probes.discard(proc.pid)
            signal_group(proc.pid, signal.SIGKILL)
            self.loop.remove_reader(fd)
            try:
                captured.extend(os.read(fd, 65536))
            except OSError:
                pass
            proc.stdout.close()  # type: ignore[union-attr]
            proc.returncode = describe_status(status)[0]
            done(*exec_verdict(probe, None if timed_out else status, bytes(captured)))

        self.children[proc.pid] = exited

    def probed(self, inst: Instance, probe: Probe, kind: str, generation: int, ok: bool, detail: str) -> None:
        if self.stopping or inst.generation != generation or inst.pid is None or inst.stop_reason:
            return
        if ok:
            inst.probe_failed = 0
            inst.probe_ok += 1
            if kind == "readiness" and inst.probe_ok >= probe.success_threshold:
                inst.ready_once = True
                self.say(f"{inst.name} is ready ({detail})")
                liveness = inst.service.liveness
                if liveness is not None:
                    inst.probe_ok = 0
                    self.probe_later(inst, liveness, "liveness", liveness.initial_delay)
                return
        else:
            inst.probe_ok = 0
            inst.probe_failed += 1
            if inst.probe_failed >= probe.failure_threshold:
                inst.stop_detail = (f"not ready after {inst.probe_failed} probes" if kind == "readiness"
                                    else f"failed its liveness probe {inst.probe_failed} times")
                self.say(f"{inst.name} {inst.stop_detail} ({detail}): stopping it")
                self.stop(inst, kind)
                return
        self.probe_later(inst, probe, kind, probe.period)


def check_readiness(plan: Plan, root: Path) -> tuple[bool, list[str]]:
    """The readiness probes of the plan's services, once against each replica, as the supervisor
    runs them (the service's user, environment and working directory, the replica's PORT):
    ``python3 -m dream_supervisor probe``, a container engine's health check — of one service
    (a per-service image) or of a whole deployment (an image with a services layer). It passes
    when every probed replica passes, as a dependent waiting for ``healthy`` waits for all;
    services without a readiness probe, and oneshots, are not probed (a plan with none passes).
    Returns (passed, a line per replica)."""
    probed = [s for s in plan.services if s.readiness is not None and not s.oneshot]
    if not probed:
        names = ", ".join(s.name for s in plan.services)
        return True, [f"{names} {'has' if len(plan.services) == 1 else 'have'} no readiness probe"]
    supervisor = Supervisor(plan, root, Printer([], fd=2))
    results: list[tuple[Instance, tuple[bool, str]]] = []
    try:
        for inst in supervisor.instances:
            service, probe = inst.service, inst.service.readiness
            if service not in probed or probe is None:
                continue
            if probe.kind != "exec":
                results.append((inst, network_probe(probe, inst.probe_port(probe))))
                continue
            try:
                who = supervisor.identity(service)
                results.append((inst, exec_once(probe, supervisor.environment(inst, who),
                                                supervisor.workdir(service), who)))
            except (OSError, ValueError, SetupError) as exc:  # ValueError: EnvFileError, a NUL
                results.append((inst, (False, f"cannot run {probe.argv[0]}: {exc}")))
    finally:
        supervisor.loop.close()
    return all(ok for _, (ok, _) in results), [f"{inst.name}: {detail}" for inst, (_, detail) in results]
