"""``python -m dream.supervisor PLAN.json`` (in images: ``python3 -m dream_supervisor``).

Runs the deployment the plan describes until its services finish or a stop signal arrives;
the exit code is the supervisor's (see supervisor.py): 0 fine, 1 a service failed, 2 setup.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .plan import read_plan
from .supervisor import Supervisor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dream-supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("plan", type=Path, help="the deployment plan (JSON) dream rendered")
    parser.add_argument("--root", type=Path, default=Path.cwd(),
                        help="directory that relative paths in the plan are resolved against "
                             "(default: the current directory)")
    args = parser.parse_args(argv)
    try:
        plan = read_plan(args.plan)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        print(f"dream-supervisor: cannot read plan {args.plan}: {detail}", file=sys.stderr)
        return 2
    return Supervisor(plan, args.root.resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
