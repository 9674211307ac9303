"""Read env files (``KEY=value`` lines), the dialect Docker Compose's ``env_file`` and
python-dotenv users write.

- blank lines and lines starting with ``#`` are skipped; ``export KEY=value`` is accepted;
- ``'single quoted'`` values are literal;
- ``"double quoted"`` values understand ``\\n``, ``\\t``, ``\\"`` and ``\\\\``;
- unquoted values are trimmed, and `` #`` starts a comment;
- no ``$`` expansion anywhere: what is written is what the process gets.

A malformed line is an error naming the file and line, never skipped in silence (honcho
ignores what it cannot parse, and a missing env file too: honcho#196). The file is UTF-8
(a leading byte-order mark is skipped; other bytes are an error naming the line); lines end
at ``\n`` (``\r\n`` too) and nowhere else, so a form feed or U+2028 inside a value stays in
it; a NUL in a value is an error (no process environment can hold one).
"""

from __future__ import annotations

import re
from pathlib import Path

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}


class EnvFileError(ValueError):
    pass


def _double_quoted(text: str, where: str) -> str:
    out, i = [], 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(_ESCAPES.get(text[i + 1], "\\" + text[i + 1]))
            i += 2
            continue
        if char == '"':
            rest = text[i + 1:].strip()
            if rest and not rest.startswith("#"):
                raise EnvFileError(f"{where}: text after the closing quote")
            return "".join(out)
        out.append(char)
        i += 1
    raise EnvFileError(f"{where}: no closing double quote")


def parse_env(text: str, name: str = "<env>") -> dict[str, str]:
    values: dict[str, str] = {}
    text = text.removeprefix("\ufeff")
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{name}:{number}"
        match = _LINE.match(line)
        if not match:
            raise EnvFileError(f"{where}: expected KEY=value")
        key, raw = match.groups()
        if raw.startswith('"'):
            values[key] = _double_quoted(raw, where)
        elif raw.startswith("'"):
            end = raw.find("'", 1)
            if end < 0:
                raise EnvFileError(f"{where}: no closing single quote")
            rest = raw[end + 1:].strip()
            if rest and not rest.startswith("#"):
                raise EnvFileError(f"{where}: text after the closing quote")
            values[key] = raw[1:end]
        else:
            values[key] = re.split(r"\s+#", raw, maxsplit=1)[0].rstrip()
        if "\0" in values[key]:
            raise EnvFileError(f"{where}: {key}: a NUL character cannot be in an environment value")
    return values


def read_env_file(path: Path) -> dict[str, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvFileError(f"env file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise EnvFileError(f"{path}:{line}: not UTF-8 (byte 0x{data[exc.start]:02x}); "
                           "env files are UTF-8 text") from None
    return parse_env(text, str(path))
