"""The download cache: killed downloads are swept, `doit gc --cache` empties it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from dream.download_cache import clear_downloads, download_scratch, sweep_stale_downloads

REPO = Path(__file__).resolve().parents[2]


def test_sweeps_take_what_no_live_download_holds(tmp_path: Path) -> None:
    old, young, dead, kept = (tmp_path / n for n in ("download-old", "download-young", "download-dead", "abc"))
    for directory in (old, young, dead, kept):
        (directory / "out").mkdir(parents=True)
        (directory / "out" / "partial.whl").write_bytes(b"x" * 100)
    (dead / ".in-use").touch()  # its download was killed: nobody holds the lock
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(kept, (two_hours_ago, two_hours_ago))
    with download_scratch(tmp_path) as live:  # sweeps first, then holds its own
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["abc", "download-young", live.name])
        assert sweep_stale_downloads(tmp_path) == 0 and live.is_dir()
    assert not live.exists()


def test_clearing_removes_wheels_and_debs_and_keeps_member_lists(tmp_path: Path) -> None:
    (tmp_path / "wheels" / "aa").mkdir(parents=True)
    (tmp_path / "wheels" / "aa" / "p-1.0-py3-none-any.whl").write_bytes(b"w" * 1000)
    (tmp_path / "wheels" / "download-x").mkdir()
    (tmp_path / "wheels" / "download-x" / ".in-use").touch()
    (tmp_path / "debs").mkdir()
    (tmp_path / "debs" / "bash.deb").write_bytes(b"d" * 24)
    (tmp_path / "wheel-members").mkdir()
    (tmp_path / "wheel-members" / "aa.json").write_text("{}")
    with download_scratch(tmp_path / "debs") as live:
        (live / "half.deb").write_bytes(b"h" * 10)
        reclaimed = clear_downloads(tmp_path)
        assert (reclaimed.files, reclaimed.bytes) == (2, 1024)
        assert (live / "half.deb").read_bytes() == b"h" * 10  # a running download keeps its files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["debs", "wheel-members", "wheels"]
    assert [p for p in (tmp_path / "wheels").iterdir()] == [] and [p for p in (tmp_path / "debs").iterdir()] == []
    assert clear_downloads(tmp_path).files == 0


def test_a_download_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A killed build must not leave an orphaned pip writing into the cache."""
    marker = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys; from dream.download_cache import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent())\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "import time; time.sleep(60)\n")], cwd=REPO)
    deadline = time.time() + 20
    while not marker.exists() or not marker.read_text():
        assert time.time() < deadline, "the parent never started its child"
        time.sleep(0.05)
    child = int(marker.read_text())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while _alive(child):
        assert time.time() < deadline, "the download child outlived its killed parent"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
