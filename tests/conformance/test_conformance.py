"""The conformance suite: one deployment that exercises the service model (recipe/), run by
every manager, and one test per observable fact, parametrized over the managers.

The deployment (recipe/conformance.yaml): `redis` (the preset: a database with a readiness
probe), `migrate` (a one-shot that takes a second), `app` (waits for redis `healthy` and for
migrate `completed_successfully`; counts its starts in the persistent volume data/app; leaves a
file in the wiped volume data/scratch; reads a config file; gets env from the deployment and
from itself; serves on a port; has a liveness probe; ends on SIGTERM) and `stubborn` (ignores
SIGTERM; stop_grace_period 1s). Each manager runs it twice (the persistence facts need two
runs); every fact is checked against those runs (tests/conformance/conftest.py).

What a manager cannot express is in `UNSUPPORTED`, with the reason: such a case is an
``xfail(strict=True)`` that must fail on the fact itself (`FactFails`): a manager that suddenly
could do it, or a run that broke for another reason (a missing component), fails the suite.
A later manager joins by a `Driver` class in conftest.py (in `MANAGERS`) and its rows here;
`podman-kube` is the Kubernetes renderer's manifests under `podman kube play`, `systemd-vm` the
systemd renderer's units under real systemd in `doit run:vm`'s VM (every fact holds there).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conformance.conftest import GRACE, MANAGERS, Record, Run, Runs

pytestmark = pytest.mark.integration

KILL_MARGIN = 1.5  # s: from the end of stubborn's grace to its SIGKILL having ended it
STOP_MARGIN = 6.0  # s: from the longest grace to the manager's exit (compose removes its containers)


class FactFails(AssertionError):
    """The fact does not hold for this manager (what an unsupported case must raise)."""


FACTS: dict[str, str] = {
    "order": "the one-shot migration completed before the app started (completed_successfully)",
    "gating": "the app started only after redis's readiness probe had passed (healthy)",
    "env_deployment": "the deployment's env reaches the app",
    "env_service": "the service's own env reaches the app",
    "port": "the app listens on its port on 127.0.0.1 and answers",
    "config_file": "the app reads its config file",
    "persistent_volume": "the persistent volume keeps the start count: 1, then 2",
    "wiped_volume": "the wiped volume is empty at the second start",
    "liveness": "the liveness probe asks the app",
    "stop_signal": "a stop sends the app its stop signal; the app and redis end by themselves within their grace",
    "ignorer_killed": "the service that ignores SIGTERM is killed after its grace period, not before",
    "graceful_stop": "the whole deployment is down within the longest grace plus a margin, exit code 0",
    "nothing_left": "nothing of the deployment runs (or exists, for containers) afterwards",
}

PROCFILE_ONLY = "a Procfile starts every process at once and stops them all together"
UNSUPPORTED: dict[tuple[str, str], str] = {
    ("honcho", "order"): PROCFILE_ONLY + ": no depends_on (completed_successfully)",
    ("honcho", "gating"): PROCFILE_ONLY + ": no readiness probe, no depends_on (healthy)",
    ("honcho", "liveness"): "a Procfile has no probes",
    ("honcho", "ignorer_killed"): "honcho sends SIGKILL a fixed 5 s after SIGTERM "
                                  "(honcho.manager.KILL_WAIT), whatever stop_grace_period says",
    ("honcho", "graceful_stop"): "honcho waits its fixed 5 s (KILL_WAIT) for the SIGTERM-ignorer, "
                                 "not its 1s grace; and exits with code 130 after SIGINT",
    ("podman-kube", "order"): "Kubernetes has no start order, and a pod cannot see a Job complete without "
                              "API access: completed_successfully is not waited for (only healthy, by an "
                              "init container running the dependency's probe)",
}


def cases(fact: str) -> list[object]:
    """Every manager for ``fact``; an unsupported one as a strict xfail with its reason."""
    return [pytest.param(name, id=f"{name}-unsupported", marks=pytest.mark.xfail(
                strict=True, raises=FactFails, reason=UNSUPPORTED[(name, fact)]))
            if (name, fact) in UNSUPPORTED else pytest.param(name, id=name)
            for name in MANAGERS]


def holds(condition: bool, message: str) -> None:
    if not condition:
        raise FactFails(message)


def runs_of(runs: Runs, manager: str) -> list[Run]:
    """Both runs; a manager that could not run them fails every fact (never a skip)."""
    record: Record = runs(manager)
    if record.error:
        pytest.fail(f"{manager}: {record.error}")
    for run in record.runs:
        if run.problem:
            pytest.fail(f"{manager}, run {run.number}: {run.problem}\n{run.log()}")
    assert len(record.runs) == 2
    return record.runs


def each(runs: Runs, manager: str, check: Callable[[Run], None]) -> None:
    for run in runs_of(runs, manager):
        check(run)


def test_the_table_names_real_managers_and_facts() -> None:
    assert {manager for manager, _ in UNSUPPORTED} <= set(MANAGERS)
    assert {fact for _, fact in UNSUPPORTED} <= set(FACTS)
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(FACTS) <= tested, f"facts without a test: {set(FACTS) - tested}"


def before(run: Run, first: str, then: str) -> None:
    a, b = run.first(first), run.first(then)
    holds(a is not None, f"run {run.number}: no {first!r} event {sorted(run.events)}\n{run.log()}")
    holds(b is not None, f"run {run.number}: no {then!r} event {sorted(run.events)}\n{run.log()}")
    assert a is not None and b is not None
    holds(a < b, f"run {run.number}: {then} at {b:.3f}, {b - a:+.3f}s after {first} (must be later)")


def decisive(runs: list[Run], later: str, earlier: str) -> None:
    """The recipe's timing made ``later`` come after ``earlier`` in some run, so that that run's
    order was decided by ``later``'s condition alone (a check that is not vacuous)."""
    times = [(run.first(later), run.first(earlier)) for run in runs]
    assert any(a is not None and b is not None and a > b for a, b in times) or any(
        a is None or b is None for a, b in times), f"{later} never came after {earlier}: {times}"


@pytest.mark.parametrize("manager", cases("order"))
def test_order(runs: Runs, manager: str) -> None:
    each(runs, manager, lambda run: before(run, "migrate-done", "app-start"))
    decisive(runs_of(runs, manager), "migrate-done", "db-healthy")


@pytest.mark.parametrize("manager", cases("gating"))
def test_gating(runs: Runs, manager: str) -> None:
    each(runs, manager, lambda run: before(run, "db-healthy", "app-start"))
    if (manager, "order") not in UNSUPPORTED:
        # The app also waits for migrate: some run must have had migrate done before redis was
        # healthy, so that its start was decided by healthy alone. A manager whose app never
        # waits for migrate (its `order` fact fails, strictly) needs no such run: podman plays
        # the pods one by one, so migrate's end there falls before or after redis's readiness
        # by the machine's speed.
        decisive(runs_of(runs, manager), "db-healthy", "migrate-done")


def answer(run: Run) -> dict:
    holds(run.answer is not None, f"run {run.number}: the app never answered\n{run.log()}")
    assert run.answer is not None
    return run.answer


@pytest.mark.parametrize("manager", cases("env_deployment"))
def test_env_deployment(runs: Runs, manager: str) -> None:
    each(runs, manager, lambda run: holds(answer(run)["deployment_env"] == "from the deployment",
                                          f"CONF_DEPLOYMENT_VALUE: {answer(run)['deployment_env']!r}"))


@pytest.mark.parametrize("manager", cases("env_service"))
def test_env_service(runs: Runs, manager: str) -> None:
    each(runs, manager, lambda run: holds(answer(run)["service_env"] == "from the service",
                                          f"CONF_SERVICE_VALUE: {answer(run)['service_env']!r}"))


@pytest.mark.parametrize("manager", cases("port"))
def test_port(runs: Runs, manager: str) -> None:
    # The answer was asked for on 127.0.0.1:APP_PORT, the port the app declares; its PORT is
    # the host's rule in every manager (port_base 5000 + 100 × its place, the third service).
    each(runs, manager, lambda run: holds(isinstance(answer(run).get("starts"), int)
                                          and answer(run).get("port_env") == "5200", str(run.answer)))


@pytest.mark.parametrize("manager", cases("config_file"))
def test_config_file(runs: Runs, manager: str) -> None:
    each(runs, manager, lambda run: holds(answer(run)["config"] == "hello from the config file\n",
                                          f"the config file held {answer(run)['config']!r}"))


@pytest.mark.parametrize("manager", cases("persistent_volume"))
def test_persistent_volume(runs: Runs, manager: str) -> None:
    counts = [answer(run)["starts"] for run in runs_of(runs, manager)]
    holds(counts == [1, 2], f"start counts {counts}, not [1, 2]")


@pytest.mark.parametrize("manager", cases("wiped_volume"))
def test_wiped_volume(runs: Runs, manager: str) -> None:
    first, second = runs_of(runs, manager)
    holds(answer(first)["scratch_before"] == [], f"run 1 found {first.answer}")
    # the first start left data/scratch/left-by-start-1 there
    holds(answer(second)["scratch_before"] == [], f"the second start found {answer(second)['scratch_before']}")


@pytest.mark.parametrize("manager", cases("liveness"))
def test_liveness(runs: Runs, manager: str) -> None:
    first = runs_of(runs, manager)[0]
    holds(answer(first)["health_hits"] >= 1, "no liveness probe asked /health within 3 s")


def gone(run: Run, service: str) -> float:
    holds(service in run.gone_after, f"run {run.number}: {service} was not seen running and ending "
                                     f"(running: {run.running}, ended: {run.gone_after})\n{run.log()}")
    return run.gone_after[service]


def stop_signal(run: Run) -> None:
    holds("app-sigterm" in run.events, f"run {run.number}: the app got no SIGTERM {sorted(run.events)}")
    for service in ("app", "redis"):
        holds(gone(run, service) < GRACE[service],
              f"run {run.number}: {service} ended {gone(run, service):.2f}s after the stop, its grace is {GRACE[service]:g}s")


@pytest.mark.parametrize("manager", cases("stop_signal"))
def test_stop_signal(runs: Runs, manager: str) -> None:
    each(runs, manager, stop_signal)


def ignorer_killed(run: Run) -> None:
    took, grace = gone(run, "stubborn"), GRACE["stubborn"]
    holds(grace <= took <= grace + KILL_MARGIN,
          f"run {run.number}: stubborn ended {took:.2f}s after the stop; its grace is {grace:g}s\n{run.log()}")


@pytest.mark.parametrize("manager", cases("ignorer_killed"))
def test_ignorer_killed(runs: Runs, manager: str) -> None:
    each(runs, manager, ignorer_killed)


def graceful_stop(run: Run) -> None:
    limit = GRACE["stubborn"] + STOP_MARGIN
    holds(run.exit_after is not None and run.exit_after <= limit,
          f"run {run.number}: the manager exited {run.exit_after}s after SIGINT (at most {limit:g}s)")
    holds(run.exit_code == 0, f"run {run.number}: exit code {run.exit_code}\n{run.log()}")


@pytest.mark.parametrize("manager", cases("graceful_stop"))
def test_graceful_stop(runs: Runs, manager: str) -> None:
    each(runs, manager, graceful_stop)


@pytest.mark.parametrize("manager", cases("nothing_left"))
def test_nothing_left(runs: Runs, manager: str) -> None:
    each(runs, manager, lambda run: holds(run.leftovers == [], f"run {run.number} left {run.leftovers}"))
