"""Compile modules read from wheels into unchecked-hash pycs; run by `dream.python.bytecode`
under an interpreter of the image's Python version (which need not have dream installed, so
this file uses the standard library only; its source is run with ``-c``).

Arguments: a JSON file listing [wheel path, member, image path of the .py, output file of the
.py's place] (with an empty member, the path is the module's own file, as a Debian layer has
it), and the file to write the result to: a JSON list of [image path of the pyc, file
written], in input order (each pyc at its PEP 3147 place relative to that output file). Each
module's code object is gone (refcount) before the next is compiled, so what marshal writes
for one module never depends on which modules this process compiled before it.
"""

import importlib.util
import json
import os
import sys
import zipfile
from importlib._bootstrap_external import _code_to_hash_pyc  # type: ignore[attr-defined]


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as orders:
        jobs = json.load(orders)
    archives: dict[str, zipfile.ZipFile] = {}
    written = []
    for wheel, member, image_path, out in jobs:
        if not member:
            with open(wheel, "rb") as module:
                source = module.read()
        else:
            if wheel not in archives:
                archives[wheel] = zipfile.ZipFile(wheel)
            source = archives[wheel].read(member)
        pyc = compiled(source, image_path)
        if pyc is None:
            continue
        cached = importlib.util.cache_from_source(out)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        with open(cached, "wb") as handle:
            handle.write(pyc)
        written.append([importlib.util.cache_from_source(image_path).lstrip("/"), cached])
    with open(sys.argv[2], "w", encoding="utf-8") as result:
        json.dump(written, result)


def compiled(source: bytes, image_path: str) -> "bytes | None":
    """py_compile's unchecked-hash pyc of ``source``, named ``image_path`` in tracebacks;
    None for a module that does not compile (as pip and compileall skip it)."""
    try:
        code = compile(source, image_path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    return bytes(_code_to_hash_pyc(code, importlib.util.source_hash(source), checked=False))


if __name__ == "__main__":
    main()
