"""Docker's ``Healthcheck`` for an image whose supervisor runs a whole deployment (a
``services`` layer): the supervisor's ``probe`` sub-command runs every readiness probe of the
plan once (dream/supervisor/supervisor.py: ``check_readiness``), and the check's times cover
the probes it runs. Times are in nanoseconds, as the image config holds them."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

MIN_HEALTH_NS = 1_000_000  # Docker refuses health intervals under 1 ms, and reads 0 as "30 s"


def probe_command(plan_path: str) -> list[str]:
    """The argv that runs the plan's readiness probes once."""
    return ["python3", "-m", "dream_supervisor", "probe", plan_path]


def _ns(seconds: float, keep_zero: bool = False) -> int:
    value = round(seconds * 1e9)
    return value if keep_zero and value == 0 else max(value, MIN_HEALTH_NS)


def deployment_healthcheck(plan_path: str, services: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The check of the plan's services (the plan's ``services`` entries), or None when none
    has a readiness probe (a oneshot's is never run). With one probed service it is that
    probe's: ``Interval`` its period, ``Timeout`` its timeout (× replicas: one check probes
    each replica in turn), ``StartPeriod`` its initial delay, ``Retries`` its failure
    threshold. With several, the check passes only once all pass, and dependents start only
    after what they wait for is ready: ``Interval`` is the shortest period, ``Timeout`` the
    sum of the timeouts, ``StartPeriod`` the sum of the initial delays, and ``Retries`` covers
    the sum of each probe's ``failure_threshold`` × ``period`` — no sooner unhealthy than the
    supervisor would give up on each service, one after the other."""
    probed = [(s["readiness"], int(s["replicas"])) for s in services if s.get("readiness") and not s["oneshot"]]
    if not probed:
        return None
    interval = max(min(float(p["period"]) for p, _ in probed), MIN_HEALTH_NS / 1e9)
    patience = sum(float(p["failure_threshold"]) * max(float(p["period"]), interval) for p, _ in probed)
    return {"Test": ["CMD", *probe_command(plan_path)], "Interval": _ns(interval),
            "Timeout": _ns(sum(float(p["timeout"]) * replicas for p, replicas in probed)),
            "StartPeriod": _ns(sum(float(p["initial_delay"]) for p, _ in probed), keep_zero=True),
            "Retries": max(1, math.ceil(round(patience / interval, 6)))}
