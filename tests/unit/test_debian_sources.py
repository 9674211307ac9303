"""Re-pointing the machine's apt sources at another suite (dream/debian/sources.py)."""

from __future__ import annotations

from dream.debian.sources import repoint

DEB822 = """Types: deb
# a comment stays
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_deb822_suites_are_renamed_and_nothing_else_moves() -> None:
    out = repoint(DEB822, True, "bookworm", "trixie")
    assert out == (DEB822.replace("Suites: bookworm bookworm-updates", "Suites: trixie trixie-updates")
                   .replace("Suites: bookworm-security", "Suites: trixie-security"))


def test_one_line_sources_keep_options_and_components() -> None:
    text = ("deb [signed-by=/usr/share/keyrings/k.gpg arch=amd64] http://mirror.invalid/debian bookworm main contrib\n"
            "deb http://mirror.invalid/debian-security bookworm-security main\n"
            "deb http://other.invalid/repo stable main\n"
            "# deb http://mirror.invalid/debian bookworm main\n")
    assert repoint(text, False, "bookworm", "trixie").splitlines() == [
        "deb [signed-by=/usr/share/keyrings/k.gpg arch=amd64] http://mirror.invalid/debian trixie main contrib",
        "deb http://mirror.invalid/debian-security trixie-security main",
        "deb http://other.invalid/repo stable main",
        "# deb http://mirror.invalid/debian bookworm main"]
