"""The plan a supervisor runs: one deployment, every service fully spelled out (JSON in, typed
objects out). The plan is written by dream, so this reader checks shape, not user intent."""

from __future__ import annotations

import json
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .secrets import Secret

PLAN_VERSION = 1


@dataclass(frozen=True)
class Probe:
    """A readiness or liveness check: exec (argv or shell), http or tcp, with its timing."""

    kind: str                  # "exec" | "http" | "tcp"
    argv: list[str]            # exec: the command (a shell string arrives as ["/bin/sh", "-c", s])
    host: str
    port: int | None        # None: the instance's PORT
    path: str
    scheme: str
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    json: JsonCheck | None = None  # http: the body must be JSON with this field's value


@dataclass(frozen=True)
class JsonCheck:
    """An http probe's body check: the value at ``field`` (dotted keys, a whole number indexes
    a list) must equal ``equals`` (a string, number, boolean or None)."""

    field: str
    equals: Any


@dataclass(frozen=True)
class ConfigFile:
    path: str
    content: str
    mode: int


@dataclass(frozen=True)
class Volume:
    path: str
    persistent: bool
    mode: int
    seed: list[ConfigFile] = field(default_factory=list)  # copied in when the volume is empty


@dataclass(frozen=True)
class Service:
    name: str
    index: int                 # position in the deployment: PORT = port_base + 100 * index + replica
    argv: list[str]
    env: dict[str, str]
    env_files: list[str]
    working_dir: str | None
    user: str | None
    volumes: list[Volume]
    config_files: list[ConfigFile]
    depends_on: dict[str, str]  # service -> "started" | "healthy" | "completed_successfully"
    readiness: Probe | None
    liveness: Probe | None
    restart: str               # "no" | "on-failure" | "always"
    max_restarts: int          # 0: no limit
    backoff: float
    max_backoff: float
    stop_signal: int
    stop_grace_period: float
    oneshot: bool
    replicas: int
    allowed_to_exit: bool
    log_file: str | None
    gpus: int | str | None = None  # None | "all" | N: replica i sees GPUs i*N … i*N+N-1
    pre_start: list[str] | None = None  # run before each start; the service starts when it exits 0
    secrets: list[Secret] = field(default_factory=list)  # age ciphertext, decrypted at each start


@dataclass(frozen=True)
class Plan:
    name: str
    env: dict[str, str]
    port_base: int
    log_dir: str | None
    runtime_dir: str
    services: list[Service] = field(default_factory=list)
    secrets_dir: str | None = None  # where file secrets go by default; None: a private folder per run


def _probe(data: dict[str, Any] | None) -> Probe | None:
    if data is None:
        return None
    return Probe(kind=data["kind"], argv=list(data.get("argv", [])), host=data.get("host", "127.0.0.1"),
                 port=data.get("port"), path=data.get("path", "/"), scheme=data.get("scheme", "http"),
                 initial_delay=float(data["initial_delay"]), period=float(data["period"]),
                 timeout=float(data["timeout"]), success_threshold=int(data["success_threshold"]),
                 failure_threshold=int(data["failure_threshold"]),
                 json=_json_check(data.get("json")))


def _json_check(data: dict[str, Any] | None) -> JsonCheck | None:
    if data is None:
        return None
    if not isinstance(data.get("field"), str) or not data["field"]:
        raise ValueError(f"a probe's json check needs a field (got {data!r})")
    return JsonCheck(field=data["field"], equals=data.get("equals"))


def _config_file(data: dict[str, Any]) -> ConfigFile:
    return ConfigFile(data["path"], data["content"], int(data.get("mode", "644"), 8))


def signal_number(name: Any) -> int:
    """``"SIGTERM"``, ``"TERM"``, ``"SIGRTMIN+3"`` or ``15`` → 15; ValueError for anything that is
    no signal of this system (``SIGBOGUS``, ``0``, ``99``)."""
    if isinstance(name, bool) or not isinstance(name, (int, str)):
        raise ValueError(f"{name!r} is not a signal")
    text = str(name).strip().upper()
    number: int | None = None
    if text.isdigit():
        number = int(text)
    else:
        text = text if text.startswith("SIG") else "SIG" + text
        match = re.fullmatch(r"SIG(RTMIN|RTMAX)([+-]\d+)?", text)
        if match:
            base = signal.SIGRTMIN if match.group(1) == "RTMIN" else signal.SIGRTMAX
            number = int(base) + int(match.group(2) or 0)
            if not signal.SIGRTMIN <= number <= signal.SIGRTMAX:
                number = None
        elif text in signal.Signals.__members__:
            number = int(signal.Signals[text])
    if number is None or number not in signal.valid_signals():
        raise ValueError(f"{name!r} is not a signal of this system (SIGTERM, SIGINT, SIGQUIT, "
                         "SIGHUP, SIGUSR1, SIGKILL … or a number from 1 to "
                         f"{int(signal.SIGRTMAX)})")
    return number


def _service(index: int, data: dict[str, Any]) -> Service:
    return Service(
        name=data["name"], index=index, argv=list(data["argv"]), env=dict(data.get("env", {})),
        env_files=list(data.get("env_files", [])), working_dir=data.get("working_dir"),
        user=data.get("user"),
        volumes=[Volume(v["path"], bool(v.get("persistent", True)), int(v.get("mode", "755"), 8),
                        [_config_file(f) for f in v.get("seed", [])])
                 for v in data.get("volumes", [])],
        config_files=[_config_file(c) for c in data.get("config_files", [])],
        depends_on=dict(data.get("depends_on", {})),
        readiness=_probe(data.get("readiness")), liveness=_probe(data.get("liveness")),
        restart=data.get("restart", "no"), max_restarts=int(data.get("max_restarts", 0)),
        backoff=float(data.get("backoff", 1)), max_backoff=float(data.get("max_backoff", 30)),
        stop_signal=signal_number(data.get("stop_signal", "SIGTERM")),
        stop_grace_period=float(data.get("stop_grace_period", 10)),
        oneshot=bool(data.get("oneshot", False)), replicas=int(data.get("replicas", 1)),
        allowed_to_exit=bool(data.get("allowed_to_exit", False)), log_file=data.get("log_file"),
        gpus=_gpus(data.get("gpus")),
        pre_start=list(data["pre_start"]) if data.get("pre_start") is not None else None,
        secrets=[Secret.from_plan(secret) for secret in data.get("secrets", [])])


def _gpus(value: Any) -> int | str | None:
    if value is None or value == "all":
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError(f"gpus must be null, \"all\" or a number from 1 (got {value!r})")


def plan_from_json(data: dict[str, Any]) -> Plan:
    if data.get("version") != PLAN_VERSION:
        raise ValueError(f"plan version {data.get('version')!r} is not {PLAN_VERSION}; "
                         "render it again with this dream")
    return Plan(name=data["name"], env=dict(data.get("env", {})), port_base=int(data.get("port_base", 5000)),
                log_dir=data.get("log_dir"), runtime_dir=data.get("runtime_dir", "/run/dream"),
                services=[_service(i, s) for i, s in enumerate(data["services"])],
                secrets_dir=data.get("secrets_dir"))


def read_plan(path: Path) -> Plan:
    """The plan at ``path``; ValueError (one line) for anything that is not a readable plan."""
    try:
        return plan_from_json(json.loads(path.read_bytes().decode("utf-8")))
    except OSError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ValueError(detail) from None
