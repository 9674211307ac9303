"""Render a deployment as native systemd units: systemd runs the services itself, no dream
supervisor. ``build/<deployment>/systemd/`` holds, for deployment ``d``:

- ``d.target``: ``Wants=`` every service unit (each instance of a template) and the prepare
  unit; ``[Install] WantedBy=multi-user.target`` (system) or ``default.target`` (user);
- ``d-<svc>.service`` per service, or with ``replicas: N`` a template ``d-<svc>@.service`` with
  instances ``0`` … ``N-1``, each given its own variables by a drop-in
  ``d-<svc>@<i>.service.d/dream-instance.conf`` (``PORT`` = the service's ``PORT`` + i,
  ``DREAM_INSTANCE=<svc>.<i+1>``, its ``CUDA_VISIBLE_DEVICES``, its log file under ``log_dir``).
  Drop-ins rather than arithmetic in ``/bin/sh -c``: the argv stays the service's own, and the
  readiness wait, the liveness check and ``systemctl show`` see the same variables;
- ``d-dream-prepare.service`` (only when there is something to prepare): a oneshot that makes
  the volumes (a non-persistent one emptied first, a new one with its mode, owned by the
  service's user, an empty one given its seed files from ``config/.seed/``) and the log files' folders, once per start of ``d.target`` (it is
  ``PartOf=`` it, every service ``Requires=`` and is ordered ``After=`` it). This is what the
  supervisor's setup does once per deployment start: a service restarted by systemd does not
  wipe its volume again. Not ``ExecStartPre=``: systemd opens ``StandardOutput=append:`` before
  any ``ExecStartPre=`` runs, so the log folder must exist first, and an ``ExecStartPre=`` would
  wipe at every restart of the unit;
- ``d-<svc>-liveness.timer`` + ``.service`` (``@`` templates with replicas) for a liveness
  probe: the timer, bound to the service (``BindsTo=`` + ``After=``, so it runs from readiness
  on and stops with the service), runs the probe every ``period``; the check's
  ``ExecStopPost=+`` counts failures in a row in ``%t/dream-<unit>.liveness`` and after
  ``failure_threshold`` of them restarts the service (``systemctl --no-block restart``, its
  restart policy and start limit apply), or stops it under ``restart: no``. A timer, not
  ``WatchdogSec=``: a watchdog needs the service itself to send ``WATCHDOG=1`` (sd_notify),
  which dream's services do not;
- ``config/<svc>/…``: the service's config files. ``DREAM_CONFIG_DIR`` (and
  ``XDG_CONFIG_HOME``) point at ``<config_dir>/<svc>``, where they are read as rendered: the
  option ``config_dir`` defaults to this folder's ``config``, so on the host they are used in
  place; the VM installs them at ``/etc/dream/<d>/config``. Nothing copies them at start.

``StateDirectory=``/``RuntimeDirectory=`` are not used: they name folders below ``/var/lib``
and ``/run`` (``~/.local/share``, ``$XDG_RUNTIME_DIR`` for the user manager), while a volume is
a path below the deployment's root, shared by the services that list it, and kept where the
other renderers keep it; a ``RuntimeDirectory=`` is also removed when its unit stops.

``Restart=`` is the policy (a oneshot's ``on-failure`` retries it until it succeeds, as dream
does), ``RestartSec=`` the first backoff delay (systemd 252 has no ``RestartSteps=``: no
doubling), ``StartLimitBurst=``/``StartLimitIntervalSec=`` from ``max_restarts``, and
``RestartForceExitStatus=`` makes a death by SIGHUP/SIGINT/SIGTERM/SIGPIPE, which systemd counts
as clean, a failure that ``on-failure`` restarts, as under dream (systemd refuses it for a
oneshot). A deployment named like one of systemd's own targets (``network``, ``default`` …) or
``systemd[-…]`` is refused: its units would shadow systemd's.

Readiness is an ``ExecStartPost=`` that waits until the probe passed ``success_threshold``
times in a row, or fails the start after ``failure_threshold`` failures in a row (exec probes:
a ``/bin/sh`` loop with ``timeout -s KILL``; http/tcp: a ``python3 -c`` program, which checks an
http probe's JSON body too), bounded by
``TimeoutStartSec=``; so units ordered ``After=`` it start once it is healthy.

Quoting (systemd.syntax(7), systemd.service(5) "Command lines", systemd.exec(5)
``Environment=``): every command-line word that is not plainly safe is written in double quotes
with C escapes (``\\\\``, ``\\"``, ``\\n``, ``\\t``, ``\\xNN``/``\\uNNNN`` for other control
characters), ``%`` as ``%%`` (specifiers) and ``$`` as ``$$`` (variables); ``Environment=`` items
the same, but ``$`` stays (no expansion there). Paths get ``%%`` only. What systemd cannot
express of the model is listed in ``# - `` lines at the top of the unit concerned (the whole
deployment's in the target), as the Compose renderer does.

Options (``target.options``, the deployment's ``systemd:`` mapping): ``scope`` ``system``
(default) or ``user``; ``root``, the deployment's root where the units run (default
``target.root``; the VM passes ``/``); ``config_dir`` (see above).

Pure (dream/renderers/base.py): the env files' variables come in through the `Target`.
"""

from __future__ import annotations

import base64
import json
import math
import re
import signal
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Iterable, Mapping

from dream.errors import DreamError
from dream.renderers.base import File, Plan, Target
from dream.supervisor.plan import signal_number
from dream.supervisor.secrets import IDENTITY_SECRET, SECRETS_DIR_ENV

SCOPES = ("system", "user")
WANTED_BY = {"system": "multi-user.target", "user": "default.target"}
PREPARE = "dream-prepare"  # d-dream-prepare.service: no service may be called that
INSTANCE_DROP_IN = "dream-instance.conf"
SAFE_WORD = re.compile(r"[A-Za-z0-9_./,=:+@-]+")  # a word systemd's splitter passes as it is
PREFIXES = "@-:+!"  # special at the start of a command line's first word
CLEAN_SIGNALS = "SIGHUP SIGINT SIGTERM SIGPIPE"  # deaths systemd counts as a clean exit
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
SPECIAL = frozenset((  # systemd's own targets (systemd.special(7), v252): <d>.target must not shadow one
    "basic bluetooth boot-complete cryptsetup cryptsetup-pre ctrl-alt-del default emergency exit "
    "factory-reset final first-boot-complete getty getty-pre graphical graphical-session "
    "graphical-session-pre halt hibernate hybrid-sleep initrd initrd-fs initrd-root-device "
    "initrd-root-fs initrd-switch-root initrd-usr-fs integritysetup integritysetup-pre kbrequest kexec "
    "local-fs local-fs-pre multi-user network network-online network-pre nss-lookup nss-user-lookup "
    "paths poweroff printer reboot remote-cryptsetup remote-fs remote-fs-pre remote-integritysetup "
    "remote-veritysetup rescue rpcbind runlevel0 runlevel1 runlevel2 runlevel3 runlevel4 runlevel5 "
    "runlevel6 shutdown sigpwr sleep slices smartcard sockets soft-reboot sound suspend "
    "suspend-then-hibernate swap sysinit system-update system-update-pre time-set time-sync timers "
    "tpm2 umount usb-gadget veritysetup veritysetup-pre xdg-desktop-autostart").split())
START_SLACK = 5.0  # seconds TimeoutStartSec= leaves beyond the probes' own worst case

READINESS_SH = ("{delay}ok=0 failed=0; while :; do "
                "if out=$(timeout -s KILL {timeout} \"$@\" 2>&1); then ok=$((ok + 1)) failed=0; "
                "[ \"$ok\" -lt {success} ] || exit 0; "
                "else ok=0 failed=$((failed + 1)); if [ \"$failed\" -ge {failure} ]; then "
                "printf 'not ready after %s probes: %s\\n' \"$failed\" \"$out\" >&2; exit 1; fi; fi; "
                "sleep {period}; done")

PROBE_PY = """\
import http.client, json, socket, ssl, sys, time
kind, host, port, offset, path, scheme = sys.argv[1:7]
timeout, delay, period = map(float, sys.argv[7:10])
need, limit = map(int, sys.argv[10:12])
field, want = (sys.argv[12], json.loads(sys.argv[13])) if len(sys.argv) > 13 else (None, None)
port = int(port) + int(offset)
def body_check(body):
    try:
        value = json.loads(body)
        for key in field.split("."):
            value = value[int(key)] if isinstance(value, list) and key.isdigit() else value[key]
    except (ValueError, KeyError, IndexError, TypeError):
        return False, f"no {field} in a JSON body (wanted {json.dumps(want)})"
    same = value == want and isinstance(value, bool) == isinstance(want, bool)
    return same, f"{field} = {json.dumps(value)[:80]}" + ("" if same else f" (wanted {json.dumps(want)})")
def probe():
    try:
        if kind == "tcp":
            socket.create_connection((host, port), timeout).close()
            return True, f"tcp {host}:{port} accepts connections"
        if scheme == "https":
            c = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl._create_unverified_context())
        else:
            c = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            c.request("GET", path, headers={"User-Agent": "dream-probe"})
            r = c.getresponse()
            status, body = r.status, (r.read(1 << 20) if field else b"")
        finally:
            c.close()
        detail = f"GET {scheme}://{host}:{port}{path} answered {status}"
        if not 200 <= status < 400 or field is None:
            return 200 <= status < 400, detail
        ok, found = body_check(body)
        return ok, f"{detail}, {found}"
    except Exception as e:
        return False, f"{kind} {host}:{port}: {e or type(e).__name__}"
time.sleep(delay)
ok = failed = 0
while True:
    passed, detail = probe()
    if passed:
        ok, failed = ok + 1, 0
        if ok >= need:
            sys.exit(print(f"ready: {detail}") if limit > 1 else 0)
    else:
        ok, failed = 0, failed + 1
        if failed >= limit:
            sys.exit(f"not ready after {failed} probes: {detail}" if limit > 1 else detail)
    time.sleep(period)"""

LIVENESS_SH = ('if [ "$SERVICE_RESULT" = success ]; then rm -f "$1"; exit 0; fi; '
               'n=$(( $(cat "$1" 2>/dev/null || echo 0) + 1 )); '
               'if [ "$n" -lt {failure} ]; then echo "$n" > "$1"; echo "liveness probe failed ($n/{failure})"; exit 0; fi; '
               'rm -f "$1"; echo "$2 failed its liveness probe $n times: {doing} it" >&2; '
               'exec systemctl {scope}--no-block {action} "$2"')

WIPE_SH = ('if [ -L "$1" ]; then echo "volume $1 is a symlink; refusing to wipe it" >&2; exit 1; fi; '
           'if [ -d "$1" ]; then find "$1" -mindepth 1 -maxdepth 1 -exec rm -rf {} + && chmod "$2" "$1"; '
           'elif [ -e "$1" ]; then rm -f "$1"; fi; '
           '[ -d "$1" ] || install -d -m "$2" "$1"')

MAKE_SH = '[ -d "$1" ] || install -d -m "$2" "$1"'

SEED_SH = ('[ -z "$(ls -A "$1")" ] || exit 0; v=$1 o=$2; shift 2; '
           'while [ "$#" -gt 0 ]; do install -D -m "$3" "$1" "$v/$2" || exit 1; shift 3; done; '
           '[ "$o" = - ] || chown -R "$o" "$v"')
DEFAULT_AGE_IDENTITY = "/etc/dream/age-identity"  # where units load the operator's age identity from
SECRETS = ".secrets"  # <config_dir>/.secrets/<service>/<name>.age: the ciphertext of file secrets
SEEDS = ".seed"  # <config_dir>/.seed/<service>/<volume index>/…: no service's config folder


class Raw(str):
    """A command-line word written as it is: it holds specifiers meant to expand (``%t``)."""


def quoted(text: str, what: str, dollar: bool = True) -> str:
    """``text`` in double quotes as systemd's splitter reads it back: C escapes, ``%%``, and
    (``dollar``: in a command line, where ``$`` expands variables) ``$$``."""
    if "\0" in text:
        raise DreamError(f"{what}: a NUL character cannot be passed to a process")
    out = []
    for char in text:
        code = ord(char)
        if char in ESCAPES:
            out.append(ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0x80 <= code < 0xA0 or char in "\u2028\u2029":
            out.append(f"\\u{code:04x}")
        elif char == "%":
            out.append("%%")
        elif char == "$" and dollar:
            out.append("$$")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def word(text: str, what: str, first: bool = False) -> str:
    """One word of a command line: as it is when nothing in it is special, else `quoted`."""
    if isinstance(text, Raw):
        return str(text)
    if SAFE_WORD.fullmatch(text) and not (first and text[0] in PREFIXES):
        return text
    return quoted(text, what)


def command_line(argv: list[str], what: str, prefix: str = "") -> str:
    """An ``Exec*=`` value: ``prefix`` (``+``: full privileges), then the quoted argv."""
    if not argv:
        raise DreamError(f"{what}: an empty command")
    return prefix + " ".join(word(arg, what, first=i == 0) for i, arg in enumerate(argv))


def assignment(name: str, value: str, what: str) -> str:
    """An ``Environment=`` item: ``K=V`` or ``"K=V"`` (no ``$`` expansion there: ``%%`` only)."""
    item = f"{name}={value}"
    return item if SAFE_WORD.fullmatch(item) else quoted(item, what, dollar=False)


def path_value(path: str, what: str) -> str:
    """A path setting's value (WorkingDirectory=, EnvironmentFile=, append:): specifiers
    escaped; a line break or other control character cannot be written there."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise DreamError(f"{what}: {path!r} holds a control character, which a unit file cannot hold")
    if path.endswith("\\"):
        raise DreamError(f"{what}: {path!r} ends with a backslash (a unit file's line continuation)")
    return path.replace("%", "%%")


def span(seconds: float, least: float = 0.0) -> str:
    """A time span systemd reads exactly: ``90s``, ``1500ms``, ``10us`` (whole microseconds)."""
    micro = max(round(seconds * 1_000_000), round(least * 1_000_000))
    if micro % 1_000_000 == 0:
        return f"{micro // 1_000_000}s"
    if micro % 1_000 == 0:
        return f"{micro // 1_000}ms"
    return f"{micro}us"


def decimal(seconds: float) -> str:
    """Seconds as ``sleep`` and ``timeout`` read them: ``0.2``, ``1``, ``0.000010``."""
    text = f"{seconds:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def signal_name(value: Any, what: str) -> str:
    """``KillSignal=``'s spelling of a signal: ``SIGTERM``, ``SIGRTMIN+3``."""
    try:
        number = signal_number(value)
    except ValueError as exc:
        raise DreamError(f"{what}: {exc}") from None
    if number > signal.SIGRTMIN and number <= signal.SIGRTMAX:
        return f"SIGRTMIN+{number - signal.SIGRTMIN}"
    return signal.Signals(number).name


def visible_gpus(gpus: Any, replica: int) -> str | None:
    """The supervisor's ``CUDA_VISIBLE_DEVICES`` for replica ``replica`` (from 1)."""
    if not isinstance(gpus, int) or isinstance(gpus, bool):
        return None
    first = (replica - 1) * gpus
    return ",".join(str(device) for device in range(first, first + gpus))


@dataclass(frozen=True)
class Settings:
    """One rendering's fixed facts: the deployment, the flavour and where things are."""

    deployment: str
    scope: str
    root: PurePosixPath
    config_dir: PurePosixPath
    env_files: Mapping[str, Mapping[str, str]]
    age_identity: str = DEFAULT_AGE_IDENTITY

    def path(self, value: str) -> str:
        """A plan path (relative to the root, or absolute) where the units run."""
        return str(self.root / value) if not value.startswith("/") else value

    @property
    def systemctl(self) -> str:
        return "--user " if self.scope == "user" else ""


def _settings(plan: Plan, target: Target) -> Settings:
    options = target.options
    unknown = sorted(set(options) - {"scope", "root", "config_dir", "age_identity"})
    if unknown:
        raise DreamError(f"systemd: unknown option {unknown[0]!r} (scope, root, config_dir, age_identity)")
    scope = options.get("scope", "system")
    if scope not in SCOPES:
        raise DreamError(f"systemd scope {scope!r}: choose one of {', '.join(SCOPES)}")
    root = PurePosixPath(str(options.get("root", target.root)))
    config_dir = PurePosixPath(str(options.get("config_dir", target.out / "config")))
    for name, value in (("root", root), ("config_dir", config_dir)):
        if not value.is_absolute():
            raise DreamError(f"systemd {name} {str(value)!r} must be an absolute path")
    return Settings(plan["name"], scope, root, config_dir, target.env_files,
                    str(options.get("age_identity", DEFAULT_AGE_IDENTITY)))


# -- names -------------------------------------------------------------------------------------

def unit_base(settings: Settings, service: Mapping[str, Any]) -> str:
    return f"{settings.deployment}-{service['name']}"


def templated(service: Mapping[str, Any]) -> bool:
    return int(service["replicas"]) > 1


def instances(settings: Settings, service: Mapping[str, Any]) -> list[str]:
    """The units that run ``service``: ``d-svc.service``, or ``d-svc@0.service`` … ``@N-1``."""
    base = unit_base(settings, service)
    if not templated(service):
        return [f"{base}.service"]
    return [f"{base}@{i}.service" for i in range(int(service["replicas"]))]


def unit_files(settings: Settings, service: Mapping[str, Any]) -> tuple[str, str, str]:
    """The service's unit file, its liveness timer's and its liveness check's file names."""
    base, at = unit_base(settings, service), "@" if templated(service) else ""
    return f"{base}{at}.service", f"{base}-liveness{at}.timer", f"{base}-liveness{at}.service"


def _check_names(plan: Plan) -> None:
    if plan["name"] in SPECIAL or plan["name"] == "systemd" or plan["name"].startswith("systemd-"):
        raise DreamError(f"deployment {plan['name']!r}: its units would shadow systemd's own "
                         f"({plan['name']}.target, {plan['name']}-…); rename the deployment")
    names = {s["name"] for s in plan["services"]}
    if PREPARE in names:
        raise DreamError(f"service name {PREPARE!r} is taken by the systemd renderer "
                         f"({plan['name']}-{PREPARE}.service); rename the service")
    for service in plan["services"]:
        if service["liveness"] and f"{service['name']}-liveness" in names:
            raise DreamError(f"services {service['name']} (its liveness check) and "
                             f"{service['name']}-liveness would both be the unit "
                             f"{plan['name']}-{service['name']}-liveness.service; rename one")


# -- a service's environment -------------------------------------------------------------------

def environment(plan: Plan, settings: Settings, index: int, service: Mapping[str, Any],
                replica: int) -> dict[str, str]:
    """What the supervisor's ``environment`` gives replica ``replica`` (from 1), less the
    supervisor's own environment and the env files (``EnvironmentFile=``)."""
    env = dict(plan["env"])
    env["PORT"] = str(int(plan["port_base"]) + 100 * index + replica - 1)
    devices = visible_gpus(service["gpus"], replica)
    if devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = devices
    env.update(service["env"])
    env.update(DREAM_DEPLOYMENT=plan["name"], DREAM_SERVICE=service["name"],
               DREAM_INSTANCE=f"{service['name']}.{replica}")
    if service["config_files"]:
        env["DREAM_CONFIG_DIR"] = env["XDG_CONFIG_HOME"] = str(settings.config_dir / service["name"])
    return env


def split_environment(envs: list[dict[str, str]]) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The variables every instance shares (for the unit) and each instance's own (drop-ins)."""
    first = envs[0]
    common = {k: v for k, v in first.items() if all(e.get(k) == v for e in envs)}
    return common, [{k: v for k, v in e.items() if k not in common} for e in envs]


def log_path(plan: Plan, service: Mapping[str, Any], replica: int) -> str | None:
    if service["log_file"]:
        return str(service["log_file"])
    if plan["log_dir"]:
        return f"{plan['log_dir']}/{service['name']}.{replica}.log"
    return None


# -- commands --------------------------------------------------------------------------------

def resolve(argv: list[str], settings: Settings, service: Mapping[str, Any]) -> list[str]:
    """A relative command with a ``/`` (``./migrate.sh``) runs from the working directory under
    the supervisor; systemd needs it absolute."""
    first = argv[0]
    if "/" in first and not first.startswith("/"):
        return [str(PurePosixPath(workdir(settings, service)) / first), *argv[1:]]
    return list(argv)


def workdir(settings: Settings, service: Mapping[str, Any]) -> str:
    return settings.path(service["working_dir"]) if service["working_dir"] else str(settings.root)


def identity(service: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``user`` → (User=, Group=): ``name``, ``uid``, ``uid:gid`` or ``name:group``."""
    if not service["user"]:
        return None, None
    user, _, group = str(service["user"]).partition(":")
    return user, group or None


def network_probe_argv(probe: Mapping[str, Any], port: int, templated_unit: bool,
                       once: bool) -> list[str]:
    """``python3 -c`` running an http or tcp probe as the supervisor does; ``once``: one try."""
    offset = Raw("%i") if templated_unit and probe.get("port") is None else "0"
    base = str(probe["port"]) if probe.get("port") is not None else str(port)
    timing = (["0", "0", "1", "1"] if once else
              [decimal(probe["initial_delay"]), decimal(probe["period"]),
               str(probe["success_threshold"]), str(probe["failure_threshold"])])
    check = probe.get("json")
    body = [check["field"], json.dumps(check["equals"])] if check else []
    return ["python3", "-c", PROBE_PY, probe["kind"], probe.get("host", "127.0.0.1"), base, offset,
            probe.get("path", "/"), probe.get("scheme", "http"), decimal(probe["timeout"]), *timing, *body]


def readiness_argv(probe: Mapping[str, Any], port: int, templated_unit: bool,
                   settings: Settings, service: Mapping[str, Any]) -> list[str]:
    if probe["kind"] != "exec":
        return network_probe_argv(probe, port, templated_unit, once=False)
    delay = f"sleep {decimal(probe['initial_delay'])}; " if probe["initial_delay"] > 0 else ""
    script = READINESS_SH.format(delay=delay, timeout=decimal(probe["timeout"]),
                                 success=probe["success_threshold"], failure=probe["failure_threshold"],
                                 period=decimal(probe["period"]))
    return ["/bin/sh", "-c", script, "dream-readiness", *resolve(probe["argv"], settings, service)]


def start_timeout(probe: Mapping[str, Any]) -> float:
    """The longest a readiness wait may take: the delay, then failure_threshold +
    success_threshold probes, each with its timeout and period, and some slack."""
    tries = int(probe["failure_threshold"]) + int(probe["success_threshold"])
    worst = float(probe["initial_delay"]) + tries * (float(probe["period"]) + float(probe["timeout"]))
    return float(math.ceil(worst + START_SLACK))


# -- units ------------------------------------------------------------------------------------

def _header(settings: Settings, title: str, notes: list[str]) -> list[str]:
    d = settings.deployment
    where = "~/.config/systemd/user" if settings.scope == "user" else "/etc/systemd/system"
    lines = [f"# Deployment {d}, {title}: rendered by dream (`doit render:systemd`); do not edit.",
             f"# Run: doit run:systemd -d {d}   (or copy the units and *.d folders into {where},",
             f"#      then: systemctl {settings.systemctl}daemon-reload && systemctl {settings.systemctl}start {d}.target)"]
    if notes:
        lines.append("# What systemd cannot express here:")
        lines += [f"# - {note}" for note in notes]
    return lines


def _unit_text(header: list[str], sections: list[tuple[str, list[tuple[str, str]]]]) -> str:
    lines = list(header)
    for name, entries in sections:
        if not entries:
            continue
        lines += ["", f"[{name}]"] + [f"{key}={value}" for key, value in entries]
    return "\n".join(lines) + "\n"


def _dependencies(plan: Plan, settings: Settings, service: Mapping[str, Any],
                  by_name: Mapping[str, Mapping[str, Any]], notes: list[str]) -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for name, condition in service["depends_on"].items():
        dependency = by_name[name]
        units = " ".join(instances(settings, dependency))
        entries.append(("Wants" if condition == "started" else "Requires", units))
        entries.append(("After", units))
        if dependency["oneshot"] and condition != "completed_successfully":
            notes.append(f"waits for {name} ({condition}) to finish: systemd orders After= a oneshot's end, "
                         "not its start")
        if condition != "started" and not dependency["oneshot"] and (
                dependency["restart"] != "no" or dependency["liveness"]):
            notes.append(f"a restart of {name} restarts this unit too (Requires=); dream restarts {name} alone")
        if not dependency["oneshot"] and condition == "completed_successfully":
            notes.append(f"waits for {name} to start, not to complete successfully (only a oneshot's end "
                         "can be ordered)")
    return entries


def _restart(service: Mapping[str, Any]) -> str:
    """A oneshot that succeeded is done (dream does not run it again either): at most on-failure."""
    if service["restart"] == "no":
        return "no"
    return "on-failure" if service["oneshot"] else str(service["restart"])


def _service_notes(settings: Settings, service: Mapping[str, Any], user: str | None) -> list[str]:
    notes: list[str] = []
    given_as_env = [secret["name"] for secret in service.get("secrets", []) if secret.get("env")]
    if given_as_env:
        notes.append(f"secrets {', '.join(given_as_env)} are not given: units decrypt secrets into files "
                     "only (systemd reads no variable from a credential); give them as files")
    restart = _restart(service)
    delay = max(0.01, min(float(service["backoff"]), float(service["max_backoff"])))
    if restart != "no":
        notes.append(f"restarts after a fixed RestartSec={span(delay)} (systemd 252 has no RestartSteps=): "
                     f"the backoff doubling up to max_backoff {span(service['max_backoff'])} is not rendered")
        if service["max_restarts"]:
            notes.append(f"max_restarts {service['max_restarts']}: systemd gives up after "
                         f"{int(service['max_restarts']) + 1} starts within StartLimitIntervalSec (dream: after "
                         f"{service['max_restarts']} restarts in a row, a run longer than max_backoff "
                         "starting the count again)")
    probe = service["readiness"]
    if probe and not service["oneshot"]:
        notes.append(f"readiness is waited for at most TimeoutStartSec={span(start_timeout(probe))} "
                     f"(dream waits until {probe['failure_threshold']} probes in a row fail)")
    if service["liveness"]:
        if service["oneshot"]:
            notes.append("the liveness probe of a oneshot is not rendered")
        elif restart == "no":
            notes.append("failing its liveness probe stops the unit (inactive, not failed; the other units "
                         "keep running)")
    if user and settings.scope == "user":
        notes.append(f"runs as the user manager's user, not {user} (User= needs the system manager); "
                     "its volumes are not chowned")
    if service["config_files"]:
        owner = f"{user}" if user and settings.scope == "system" else "the service's user"
        notes.append(f"config files are read where rendered ({settings.config_dir / service['name']}), not "
                     f"written fresh at each start nor owned by {owner}")
    if service["env_files"]:
        notes.append("env files are read by systemd's EnvironmentFile= parser, not dream's: a line it "
                     "cannot parse is skipped (dream: an error), and `export`, a ` #` comment after a value "
                     "or `\\n` in double quotes read otherwise; their variables override every "
                     "Environment= (dream ranks GPUs, the service's env and DREAM_* above them)")
        mine = set(service["env"]) | {"CUDA_VISIBLE_DEVICES", "DREAM_DEPLOYMENT", "DREAM_SERVICE",
                                      "DREAM_INSTANCE", "DREAM_CONFIG_DIR", "XDG_CONFIG_HOME"}
        for name in service["env_files"]:
            clash = sorted(mine & set(settings.env_files.get(name, {})))
            if clash:
                notes.append(f"env file {name} sets {', '.join(clash)}, which therefore win over the "
                             "service's own values here")
    return notes


def _service_unit(plan: Plan, settings: Settings, index: int, service: Mapping[str, Any],
                  by_name: Mapping[str, Mapping[str, Any]], prepared: bool) -> list[File]:
    d, name = settings.deployment, service["name"]
    what = f"service {name}"
    template = templated(service)
    unit_file = unit_files(settings, service)[0]
    replicas = int(service["replicas"])
    user, group = identity(service)
    notes = _service_notes(settings, service, user)
    envs = [environment(plan, settings, index, service, r) for r in range(1, replicas + 1)]
    common, own = split_environment(envs) if template else (envs[0], [{}])
    logs = [log_path(plan, service, r) for r in range(1, replicas + 1)]
    if logs[0]:
        shown = logs[0] if service["log_file"] else f"{plan['log_dir']}/{name}.<n>.log"
        notes.append(f"its output goes to {shown} only (StandardOutput=append:), not to the journal "
                     "(dream writes both)")
    port = int(plan["port_base"]) + 100 * index
    at = "@%i" if template else ""

    unit: list[tuple[str, str]] = [("Description", f"{d}: {name} (dream)"), ("PartOf", f"{d}.target")]
    if prepared:
        unit += [("Requires", f"{d}-{PREPARE}.service"), ("After", f"{d}-{PREPARE}.service")]
    unit += _dependencies(plan, settings, service, by_name, notes)
    liveness = service["liveness"] if not service["oneshot"] else None
    if liveness:
        unit.append(("Wants", f"{d}-{name}-liveness{at}.timer"))
    restart = _restart(service)
    if restart != "no" and service["max_restarts"]:
        delay = max(0.01, min(float(service["backoff"]), float(service["max_backoff"])))
        window = (int(service["max_restarts"]) + 1) * (max(float(service["max_backoff"]), 1.0) + delay)
        unit += [("StartLimitIntervalSec", span(window)), ("StartLimitBurst", str(int(service["max_restarts"]) + 1))]
    elif restart != "no":
        unit.append(("StartLimitIntervalSec", "0"))

    body: list[tuple[str, str]] = [("Type", "oneshot" if service["oneshot"] else "exec")]
    if service["oneshot"]:
        body.append(("RemainAfterExit", "yes"))
    body += _identity_entries(settings, user, group, what)
    body += _environment_entries(settings, service, common, what)
    if liveness:
        body.append(("ExecStartPre", command_line(["/bin/rm", "-f", Raw(f"%t/dream-{d}-{name}{at}.liveness")],
                                                  what, prefix="+")))
    body += _secret_entries(settings, service, what, at)
    if service.get("pre_start"):  # as dream: before each start, its failure a failed start
        body.append(("ExecStartPre", command_line(resolve(service["pre_start"], settings, service),
                                                  f"{what}: pre_start")))
    body.append(("ExecStart", command_line(resolve(service["argv"], settings, service), what)))
    probe = service["readiness"]
    if probe and not service["oneshot"]:
        body.append(("ExecStartPost", command_line(readiness_argv(probe, port, template, settings, service),
                                                   f"{what}: readiness")))
        body.append(("TimeoutStartSec", span(start_timeout(probe))))
    elif service["oneshot"]:
        body.append(("TimeoutStartSec", "infinity"))
    body.append(("Restart", restart))
    if restart != "no":
        delay = max(0.01, min(float(service["backoff"]), float(service["max_backoff"])))
        body.append(("RestartSec", span(delay)))
        if restart == "on-failure" and not service["oneshot"]:  # systemd refuses it for a oneshot
            body.append(("RestartForceExitStatus", CLEAN_SIGNALS))
    body += [("KillMode", "control-group"),
             ("KillSignal", signal_name(service["stop_signal"], what)),
             ("TimeoutStopSec", span(float(service["stop_grace_period"]), least=0.000001))]
    if logs[0] and (service["log_file"] or not template):
        body += [("StandardOutput", "append:" + path_value(settings.path(logs[0]), what)),
                 ("StandardError", "inherit")]

    title = f"service {name}" + (f" ({replicas} instances: {d}-{name}@0 … @{replicas - 1})" if template else "")
    files = [File(unit_file, _unit_text(_header(settings, title, notes), [("Unit", unit), ("Service", body)]))]
    if template:
        for i in range(replicas):
            entries = [("Environment", assignment(k, v, what)) for k, v in own[i].items()]
            log = logs[i]
            if log and not service["log_file"]:
                entries += [("StandardOutput", "append:" + path_value(settings.path(log), what)),
                            ("StandardError", "inherit")]
            header = [f"# Deployment {d}, service {name}, instance {i} ({name}.{i + 1}): rendered by dream "
                      "(`doit render:systemd`); do not edit."]
            files.append(File(f"{d}-{name}@{i}.service.d/{INSTANCE_DROP_IN}", _unit_text(header, [("Service", entries)])))
    if liveness:
        files += _liveness(settings, service, liveness, port, common, own, user, group)
    return files


def _identity_entries(settings: Settings, user: str | None, group: str | None, what: str) -> list[tuple[str, str]]:
    if settings.scope != "system" or not user:
        return []
    entries = [("User", path_value(user, what))]
    if group:
        entries.append(("Group", path_value(group, what)))
    return entries


def _environment_entries(settings: Settings, service: Mapping[str, Any], env: Mapping[str, str],
                         what: str) -> list[tuple[str, str]]:
    entries = [("WorkingDirectory", path_value(workdir(settings, service), what))]
    entries += [("Environment", assignment(k, v, what)) for k, v in env.items()]
    entries += [("EnvironmentFile", path_value(settings.path(name), what)) for name in service["env_files"]]
    return entries


def _liveness(settings: Settings, service: Mapping[str, Any], probe: Mapping[str, Any], port: int,
              common: Mapping[str, str], own: list[dict[str, str]], user: str | None,
              group: str | None) -> list[File]:
    """The timer that runs the probe every period from readiness on, and the check it runs."""
    d, name = settings.deployment, service["name"]
    what = f"service {name}: liveness"
    template = templated(service)
    _, timer_file, check_file = unit_files(settings, service)
    at = "@%i" if template else ""
    main = f"{d}-{name}{at}.service"
    timer = [("Description", f"{d}: {name} liveness timer (dream)"), ("DefaultDependencies", "no"),
             ("BindsTo", main), ("After", main)]
    timing = [("OnActiveSec", span(float(probe["initial_delay"]), least=0.000001)),
              ("OnUnitActiveSec", span(float(probe["period"]), least=0.000001)),
              ("AccuracySec", "1ms")]
    title = f"liveness of service {name}"
    notes = [f"probes every {span(probe['period'])} from the start of the last probe (dream: from its end)"]
    files = [File(timer_file, _unit_text(_header(settings, title, notes), [("Unit", timer), ("Timer", timing)]))]

    action = "restart" if _restart(service) != "no" else "stop"
    body: list[tuple[str, str]] = [("Type", "oneshot")]
    if probe["kind"] == "exec":
        body += _identity_entries(settings, user, group, what)
        body += _environment_entries(settings, service, common, what)
        body.append(("ExecStart", command_line(resolve(probe["argv"], settings, service), what)))
        body.append(("TimeoutStartSec", span(float(probe["timeout"]), least=0.000001)))
    else:
        body.append(("ExecStart", command_line(network_probe_argv(probe, port, template, once=True), what)))
        body.append(("TimeoutStartSec", span(float(probe["timeout"]) + START_SLACK)))
    script = LIVENESS_SH.format(failure=probe["failure_threshold"], action=action, scope=settings.systemctl,
                                doing="restarting" if action == "restart" else "stopping")
    counter = Raw(f"%t/dream-{d}-{name}{at}.liveness")
    body.append(("ExecStopPost", command_line(["/bin/sh", "-c", script, "dream-liveness", counter, Raw(main)],
                                              what, prefix="+")))
    check = [("Description", f"{d}: {name} liveness check (dream)")]
    files.append(File(check_file, _unit_text(_header(settings, title, []), [("Unit", check), ("Service", body)])))
    if template and probe["kind"] == "exec":
        for i, env in enumerate(own):
            entries = [("Environment", assignment(k, v, what)) for k, v in env.items()]
            header = [f"# Deployment {d}, liveness of service {name}, instance {i}: rendered by dream "
                      "(`doit render:systemd`); do not edit."]
            files.append(File(f"{d}-{name}-liveness@{i}.service.d/{INSTANCE_DROP_IN}",
                              _unit_text(header, [("Service", entries)])))
    return files


def _prepare(plan: Plan, settings: Settings) -> File | None:
    """Volumes (emptied when not persistent, made when missing, owned by the service's user)
    and the log files' folders, in the supervisor's order, once per start of the target."""
    what = "prepare"
    commands: list[str] = []
    for service in plan["services"]:
        user, group = identity(service)
        for index, volume in enumerate(service["volumes"]):
            path = settings.path(volume["path"]).rstrip("/") or "/"
            mode = str(volume["mode"])
            if not re.fullmatch(r"[0-7]{3,4}", mode):
                raise DreamError(f"service {service['name']}: volume mode {mode!r} is not an octal mode")
            script = MAKE_SH if volume["persistent"] else WIPE_SH
            commands.append(command_line(["/bin/sh", "-c", script, "dream-volume", path, mode], what))
            owner = f"{user}:{group}" if group else f"{user}:"
            if user and settings.scope == "system":
                commands.append(command_line(["/bin/chown", owner, path], what))
            if volume.get("seed"):
                commands.append(_seed_command(settings, service, index, volume, path,
                                              owner if user and settings.scope == "system" else "-"))
    folders: list[str] = []
    for service in plan["services"]:
        for replica in range(1, int(service["replicas"]) + 1):
            log = log_path(plan, service, replica)
            if log:
                folder = str(PurePosixPath(settings.path(log)).parent)
                if folder not in folders:
                    folders.append(folder)
    commands += [command_line(["/bin/mkdir", "-p", folder], what) for folder in folders]
    if not commands:
        return None
    d = settings.deployment
    unit = [("Description", f"{d}: volumes and log folders (dream)"), ("PartOf", f"{d}.target")]
    body = [("Type", "oneshot"), ("RemainAfterExit", "yes"), ("TimeoutStartSec", "infinity")]
    body += [("ExecStart", command) for command in commands]
    header = _header(settings, "its volumes and log folders", [])
    return File(f"{d}-{PREPARE}.service", _unit_text(header, [("Unit", unit), ("Service", body)]))


def seed_files(service: Mapping[str, Any]) -> list[File]:
    """A service's volume seed files, rendered as config files are (``config/.seed/…``: the VM
    installs them below its ``config_dir`` too), for the prepare unit to copy in."""
    return [File(f"config/{SEEDS}/{service['name']}/{index}/{item['path']}", item["content"], int(item["mode"], 8))
            for index, volume in enumerate(service["volumes"]) for item in volume.get("seed", [])]


def _seed_command(settings: Settings, service: Mapping[str, Any], index: int, volume: Mapping[str, Any],
                  path: str, owner: str) -> str:
    """Copy the seed files into the volume when it is empty (never over anything there), with
    their modes, then give them to the service's user (``-``: nobody)."""
    folder = settings.config_dir / SEEDS / service["name"] / str(index)
    words = [word for item in volume["seed"] for word in (str(folder / item["path"]), item["path"], item["mode"])]
    return command_line(["/bin/sh", "-c", SEED_SH, "dream-seed", path, owner, *words], "prepare")


def _target_notes(plan: Plan, settings: Settings) -> list[str]:
    notes = ["a service that ends (or a oneshot that fails) leaves the other units running; dream stops "
             "the whole deployment unless the service is allowed_to_exit",
             f"services start from systemd's environment (PATH={SEARCH_PATH}), not from that of the shell "
             "that runs dream; a command named without a path is looked up in that PATH",
             f"a death by {CLEAN_SIGNALS.replace(' ', ', ')} counts as a clean exit for systemd (restarted "
             "under on-failure all the same, RestartForceExitStatus=, but a oneshot so ended counts as "
             "completed and is not retried)"]
    if any(s["volumes"] for s in plan["services"]):
        notes.append(f"volumes are made (non-persistent ones emptied, empty ones seeded) by "
                     f"{settings.deployment}-{PREPARE}.service at each start of {settings.deployment}.target, "
                     "as dream does at each deployment start")
    return notes


class SystemdRenderer:
    """``build/<deployment>/systemd/``: the target, the units, their drop-ins, the config files."""

    name = "systemd"

    def render(self, plan: Plan, target: Target) -> list[File]:
        return render(plan, target)


def secret_file(service: Mapping[str, Any], secret: Mapping[str, Any]) -> str:
    """Where a file secret's ciphertext is rendered (below ``config/``)."""
    return f"config/{SECRETS}/{service['name']}/{secret['name']}.age"


def armored(ciphertext: str) -> str:
    """An age file (base64 in the plan) as age's own ASCII armor, which `age --decrypt` reads:
    the rendered folder holds text only, and never more than the ciphertext."""
    data = base64.b64decode(ciphertext)
    if data.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----"):
        return data.decode("ascii")
    body = base64.b64encode(data).decode("ascii")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join(["-----BEGIN AGE ENCRYPTED FILE-----", *lines, "-----END AGE ENCRYPTED FILE-----"]) + "\n"


def _secret_entries(settings: Settings, service: Mapping[str, Any], what: str, at: str) -> list[tuple[str, str]]:
    """systemd's credentials carry the operator's age identity into the unit (``%d``, readable by
    the service's user only), and ``ExecStartPre=`` runs age to decrypt each file secret into the
    unit's own runtime folder (``RuntimeDirectory=``, 0700, gone when the unit stops)."""
    files = [secret for secret in service.get("secrets", []) if not secret.get("env")]
    if not files:
        return []
    folder = f"dream-{settings.deployment}-{service['name']}" + ("-%i" if at else "")
    entries = [("LoadCredential", f"{IDENTITY_SECRET}:{settings.age_identity}"),
               ("RuntimeDirectory", folder), ("RuntimeDirectoryMode", "0700"),
               ("Environment", command_line([Raw(f"{SECRETS_DIR_ENV}=%t/{folder}")], what))]
    for secret in files:
        path = secret.get("path") or f"%t/{folder}/{secret['name']}"
        source = str(settings.config_dir / SECRETS / service["name"] / f"{secret['name']}.age")
        entries.append(("ExecStartPre", command_line(
            ["/usr/bin/age", "--decrypt", "-i", Raw(f"%d/{IDENTITY_SECRET}"), "-o", Raw(path), source], what)))
        entries.append(("ExecStartPre", command_line(["/bin/chmod", format(int(secret["mode"]), "04o"), Raw(path)], what)))
    return entries


def render(plan: Plan, target: Target) -> list[File]:
    """The target, the prepare unit, each service's units (in plan order), then the config files."""
    settings = _settings(plan, target)
    _check_names(plan)
    d = settings.deployment
    by_name = {s["name"]: s for s in plan["services"]}
    prepare = _prepare(plan, settings)
    units: list[File] = []
    config: list[File] = []
    for index, service in enumerate(plan["services"]):
        units += _service_unit(plan, settings, index, service, by_name, prepare is not None)
        for item in service["config_files"]:
            config.append(File(f"config/{service['name']}/{item['path']}", item["content"], int(item["mode"], 8)))
        config += seed_files(service)
        config += [File(secret_file(service, secret), armored(secret["ciphertext"]), 0o600)
                   for secret in service.get("secrets", []) if not secret.get("env")]
    wanted = ([f"{d}-{PREPARE}.service"] if prepare else []) + [
        unit for service in plan["services"] for unit in instances(settings, service)]
    target_unit = [("Description", f"dream deployment {d}"), ("Wants", " ".join(wanted))]
    header = _header(settings, f"{len(plan['services'])} services", _target_notes(plan, settings))
    text = _unit_text(header, [("Unit", target_unit), ("Install", [("WantedBy", WANTED_BY[settings.scope])])])
    return [File(f"{d}.target", text), *([prepare] if prepare else []), *units, *config]


def rendered_units(files: Iterable[File]) -> list[str]:
    """The unit files and drop-in folders among rendered files (what gets installed)."""
    names: list[str] = []
    for file in files:
        top = file.path.split("/", 1)[0]
        if top.endswith((".service", ".target", ".timer", ".service.d")) and top not in names:
            names.append(top)
    return names
