"""The machine's package index settings, read from pip's configuration and handed to uv.

uv does not read pip.conf, and dream must never name an index itself: whatever index, extra
indexes, find-links and CA bundle pip is configured with (files or ``PIP_*`` variables) are
what uv gets too.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests


@functools.lru_cache(maxsize=1)
def pip_settings() -> dict[str, str]:
    """``pip config list`` as a dict of option → value (the last definition wins, as in pip)."""
    run = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True, check=False)
    settings: dict[str, str] = {}
    for line in run.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    return settings


def uv_index_args() -> list[str]:
    """uv command-line options equal to pip's index configuration."""
    settings = pip_settings()
    args: list[str] = []
    if settings.get("index-url"):
        args += ["--index-url", settings["index-url"]]
    for url in settings.get("extra-index-url", "").split():
        args += ["--extra-index-url", url]
    for link in settings.get("find-links", "").split():
        args += ["--find-links", link]
    return args


def uv_environment() -> dict[str, str]:
    """The environment for uv: pip's CA bundle (if any) as ``SSL_CERT_FILE``."""
    env = dict(os.environ)
    cert = pip_settings().get("cert")
    if cert and "SSL_CERT_FILE" not in env:
        env["SSL_CERT_FILE"] = cert
    return env


def http_session() -> requests.Session:
    """A requests session that trusts what pip trusts: its CA bundle (``cert``), its client
    certificate (``client-cert``); proxies and netrc come from the environment, as for pip.
    Used only to read wheels' central directories at lock time (`dream.python.members`)."""
    settings = pip_settings()
    import requests  # imported here: a no-op build never reaches the index
    session = requests.Session()
    if settings.get("cert"):
        session.verify = settings["cert"]
    if settings.get("client-cert"):
        session.cert = settings["client-cert"]
    if settings.get("proxy"):
        session.proxies = {"http": settings["proxy"], "https": settings["proxy"]}
    return session


def http_timeout() -> float:
    """pip's ``timeout`` (``PIP_DEFAULT_TIMEOUT``), 15 s as in pip when unset."""
    settings = pip_settings()
    try:
        return float(settings.get("timeout") or settings.get("default-timeout") or 15)
    except ValueError:
        return 15.0
