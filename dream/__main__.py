"""``python -m dream init [DIR]``: make DIR (default: here) a dream project.

It writes the two-line dodo.py that takes every task from the installed package, and creates
recipes/; then ``doit list --all`` shows a task per recipe. Presets (``imports: [sshd]``) come
with the package; a project's own layers/<name>.yaml overrides one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dream.errors import DreamError
from dream.project import init


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dream", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("init", help="write dodo.py and create recipes/")
    start.add_argument("directory", nargs="?", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    try:
        made = init(args.directory)
    except DreamError as exc:
        print(f"dream: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"dream: cannot write in {args.directory}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"dream: made {', '.join(made)} in {args.directory}; put recipes in recipes/*.yaml, "
          "then `doit list --all`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
