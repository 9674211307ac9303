"""``python -m dream.supervisor PLAN.json`` (in images: ``python3 -m dream_supervisor``).

Runs the deployment the plan describes until its services finish or a stop signal arrives;
the exit code is the supervisor's (see supervisor.py): 0 fine, 1 a service failed, 2 setup.

``python -m dream.supervisor probe PLAN.json`` runs the readiness probes of the plan's services
once (a per-service image's Docker ``HEALTHCHECK``, or a services layer's for the whole
deployment): exit code 0 when every one passes (or there are none), 1 when not, as Docker reads
a health check (a plan file named ``probe`` is given as ``./probe``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .plan import Plan, read_plan
from .supervisor import Supervisor, check_readiness


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("plan", type=Path, help="the deployment plan (JSON) dream rendered")
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="directory that relative paths in the plan are resolved against "
                             "(default: the current directory)")
    return parser


def _plan(path: Path) -> Plan | None:
    try:
        return read_plan(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"dream-supervisor: cannot read plan {path}: {detail}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        return probe(argv[1:])
    args = _parser("dream-supervisor", __doc__.splitlines()[0]).parse_args(argv)
    plan = _plan(args.plan)
    if plan is None:
        return 2
    return Supervisor(plan, args.root.resolve()).run()


def probe(argv: list[str]) -> int:
    """The ``probe`` sub-command: 0 passed, 1 anything else (an unreadable plan too: Docker
    reserves 2)."""
    args = _parser("dream-supervisor probe", "run the readiness probes of a plan's services once").parse_args(argv)
    plan = _plan(args.plan)
    if plan is None:
        return 1
    try:
        passed, lines = check_readiness(plan, args.root.resolve())
    except ValueError as exc:
        print(f"dream-supervisor: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line, flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
