"""Env files (dream.supervisor.dotenv) and the Procfile renderer's quoting (dream.renderers.procfile),
checked against a real ``/bin/sh``; the renderer is pure (the env files come in through the
Target, read by dream.managers.host)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dream.errors import DreamError
from dream.recipe.load import load_recipe
from dream.managers import host
from dream.renderers import RENDERERS
from dream.renderers.base import File, Target
from dream.renderers.procfile import dotenv_value, one_line, render, service_line
from dream.services.plan import build_plan
from dream.supervisor.dotenv import EnvFileError, parse_env, read_env_file

# -- env files -------------------------------------------------------------------------------------


def test_parse_env_dialect() -> None:
    text = (
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        "export EXPORTED=1\n"
        "  export   SPACED_EXPORT = 2  \n"
        "PLAIN = spaced value   # trailing comment\n"
        "HASH=a#b\n"
        "EMPTY=\n"
        "SINGLE='literal $HOME \\n # kept'\n"
        'DOUBLE="line\\nnext\\ttab \\"q\\" back\\\\slash $HOME"\n'
        'DQ_COMMENT="x # inside" # outside\n'
        "SQ_SPACED=  'y'  \n"
        'UNKNOWN_ESCAPE="a\\qb"\n'
        "DOLLAR=$OTHER\n"
        "CRLF=value\r\n"
        "LATER=1\n"
        "LATER=2\n"
    )
    assert parse_env(text, "x.env") == {
        "EXPORTED": "1",
        "SPACED_EXPORT": "2",
        "PLAIN": "spaced value",
        "HASH": "a#b",
        "EMPTY": "",
        "SINGLE": "literal $HOME \\n # kept",
        "DOUBLE": 'line\nnext\ttab "q" back\\slash $HOME',
        "DQ_COMMENT": "x # inside",
        "SQ_SPACED": "y",
        "UNKNOWN_ESCAPE": "a\\qb",
        "DOLLAR": "$OTHER",
        "CRLF": "value",
        "LATER": "2",
    }


@pytest.mark.parametrize("line,message", [
    ("not an assignment", "expected KEY=value"),
    ("1ABC=2", "expected KEY=value"),
    ("A B=1", "expected KEY=value"),
    ('OPEN="no end', "no closing double quote"),
    ("OPEN='no end", "no closing single quote"),
    ('A="x" y', "text after the closing quote"),
    ("A='x' y", "text after the closing quote"),
    ('MULTI="first\nsecond"', "no closing double quote"),
], ids=["words", "digit-first", "space-in-key", "double-open", "single-open", "after-double",
        "after-single", "multi-line"])
def test_malformed_line_names_file_and_line(line: str, message: str) -> None:
    with pytest.raises(EnvFileError) as caught:
        parse_env(f"# header\nGOOD=1\n{line}\nLATER=2\n", "conf/app.env")
    assert str(caught.value) == f"conf/app.env:3: {message}"


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / "a.env"
    path.write_text("A=1\nbroken\n")
    with pytest.raises(EnvFileError, match=rf"^{path}:2: expected KEY=value$"):
        read_env_file(path)
    path.write_text("A=1\n")
    assert read_env_file(path) == {"A": "1"}
    with pytest.raises(EnvFileError, match=r"^env file .*missing\.env: No such file or directory$"):
        read_env_file(tmp_path / "missing.env")


# -- .env values for honcho and foreman ------------------------------------------------------------


@pytest.mark.parametrize("value", ["a\\nb", "tab\\there", "end\\n"])
def test_dotenv_value_refuses_backslash_n_and_t(value: str) -> None:
    with pytest.raises(DreamError, match="backslash before n or t"):
        dotenv_value("KEY", value)


def test_dotenv_value_round_trips_through_dreams_own_reader() -> None:
    values = {"A": 'quote " and \\ backslash', "B": "new\nline", "C": "$HOME #x 'single'", "D": ""}
    text = "\n".join(dotenv_value(k, v) for k, v in values.items()) + "\n"
    assert len(text.splitlines()) == len(values)  # one line per value, newlines included
    assert parse_env(text) == values


# -- one_line under a real /bin/sh -------------------------------------------------------------------


SCRIPTS = [
    "echo one line",
    'x=1\necho "a $x" \'b\\n\' \\\\ 50%s %b %%\nprintf \'%s|\' "$0" tab\there\n',
    "cat <<EOF\nhi $X\nEOF",
    "cat <<'EOF'\nraw $X \\c \\0101\nEOF\n",
    "echo 'it'\\''s'\necho done\r\necho cr",
    'for i in 1 2; do\n  echo "i=$i"\ndone\necho "$(printf \'%s\' "nested\n")"\nexit 3\n',
    "f() {\n  echo \"args: $#\"\n}\nf a 'b c'\necho '\\\\ \\n' >&2\n",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=[f"script{i}" for i in range(len(SCRIPTS))])
def test_one_line_behaves_like_the_script(script: str) -> None:
    line = one_line(script)
    assert "\n" not in line and "\r" not in line
    env = {**os.environ, "X": "ex"}
    direct = subprocess.run(["/bin/sh", "-c", script], capture_output=True, env=env, timeout=10, check=False)
    folded = subprocess.run(["/bin/sh", "-c", line], capture_output=True, env=env, timeout=10, check=False)
    assert (folded.returncode, folded.stdout, folded.stderr) == (direct.returncode, direct.stdout, direct.stderr)
    assert direct.stdout or direct.stderr  # the script did something to compare


def test_one_line_leaves_a_single_line_alone() -> None:
    assert one_line("exec web --port $PORT") == "exec web --port $PORT"


# -- service_line: the argv a Procfile line runs ----------------------------------------------------

ARGS = ["$HOME", "${PATH}", "$(id)", "`id`", "it's", '"double"', "# not a comment", "two  spaces",
        " lead", "line1\nline2", "ends with newline\n", "back\\slash", "trailing\\", "tab\there",
        "*", "?", "~", "", "%s %b \\n", "a;b && c | d", "cr\rhere"]
ENV = {"WEIRD": "a $b 'c' \"d\" #e\nf\\n", "EMPTY": ""}
ECHO = ("import json, os, sys; print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
        "'env': {k: v for k, v in os.environ.items() if k.startswith(('DREAM_', 'WEIRD', 'EMPTY'))}}))")


def _service(tmp_path: Path, extra: dict) -> dict:  # type: ignore[type-arg]
    """The plan entry dream makes for an echoing service (JSON is YAML: no quoting of our own)."""
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "layers").mkdir(exist_ok=True)
    doc = {"services": {"echo": {"command": [sys.executable, "-c", ECHO], "args": ARGS, "env": ENV,
                                 "working_dir": "work dir", **extra}}}
    path = tmp_path / "recipes" / "x.yaml"
    path.write_text(json.dumps(doc, indent=1))
    plan = build_plan(load_recipe(path, tmp_path).deployments["x"])
    return plan["services"][0]


def _run_line(line: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()  # the caller's DREAM_STORE/CACHE are not the service's
            if k not in ("HONCHO_PROCESS_NAME", "PS") and not k.startswith("DREAM_")}
    return subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, cwd=cwd,
                          env={**base, **env}, timeout=10, check=False)


def test_service_line_gives_the_child_the_same_argv_and_env(tmp_path: Path) -> None:
    (tmp_path / "work dir").mkdir()
    service = _service(tmp_path, {})
    assert service["argv"][3:] == ARGS
    line = service_line(service, "x", tmp_path, tmp_path / "config")
    assert "\n" not in line
    run = _run_line(line, Path("/"))
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["argv"] == ARGS
    assert got["cwd"] == str(tmp_path / "work dir")
    assert got["env"] == {**ENV, "DREAM_DEPLOYMENT": "x", "DREAM_SERVICE": "echo", "DREAM_INSTANCE": "echo.1"}
    # honcho names the process (with -c: echo.2) in HONCHO_PROCESS_NAME, foreman in PS
    assert json.loads(_run_line(line, Path("/"), HONCHO_PROCESS_NAME="echo.2").stdout)["env"]["DREAM_INSTANCE"] == "echo.2"
    assert json.loads(_run_line(line, Path("/"), PS="echo.3").stdout)["env"]["DREAM_INSTANCE"] == "echo.3"


def test_service_line_for_a_shell_command_expands_port(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "layers").mkdir()
    path = tmp_path / "recipes" / "x.yaml"
    path.write_text("services:\n  web:\n    command: |\n      echo \"port=$PORT\"\n      echo \"args:\" \"$@\"\n"
                    "    args: [\"a b\", \"$c\"]\n    volumes: [data, {path: tmp, persistent: false}]\n")
    service = build_plan(load_recipe(path, tmp_path).deployments["x"])["services"][0]
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp" / "old").write_text("")
    run = _run_line(service_line(service, "x", tmp_path, tmp_path / "config"), Path("/"), PORT="5100")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["port=5100", "args: a b $c"]
    assert (tmp_path / "data").is_dir() and list((tmp_path / "tmp").iterdir()) == []


def test_a_failing_oneshot_line_exits_with_its_code(tmp_path: Path) -> None:
    service = {"name": "init", "working_dir": None, "volumes": [], "env_files": [], "env": {},
               "config_files": [], "argv": ["/bin/sh", "-c", "exit 3"], "oneshot": True,
               "allowed_to_exit": False}
    run = _run_line(service_line(service, "x", tmp_path, tmp_path / "config"), tmp_path)
    assert run.returncode == 3


def test_a_finished_oneshot_line_keeps_running(tmp_path: Path) -> None:
    """honcho stops every process when one ends: a oneshot that succeeded must stay."""
    service = {"name": "init", "working_dir": None, "volumes": [], "env_files": [], "env": {},
               "config_files": [], "argv": ["echo", "done"], "oneshot": True, "allowed_to_exit": False}
    proc = subprocess.Popen(["/bin/sh", "-c", service_line(service, "x", tmp_path, tmp_path / "config")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "done\n"
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(0.3)
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def test_render_writes_procfile_env_and_config(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "layers").mkdir()
    path = tmp_path / "recipes" / "x.yaml"
    path.write_text("deployments:\n  dev:\n    port_base: 6000\n    env: {GREETING: \"hi \\\"you\\\"\"}\n"
                    "services:\n  db:\n    command: db\n    readiness: {exec: 'true'}\n"
                    "  web:\n    command: web\n    replicas: 2\n    restart: always\n    depends_on: {db: healthy}\n"
                    "    config_files: [{path: a.conf, content: \"x\\n\", mode: \"0600\"}]\n")
    plan = build_plan(load_recipe(path, tmp_path).deployments["dev"])
    rendered = render(plan, Target(tmp_path, tmp_path / "out"))
    assert [f.path for f in rendered] == ["config/web/a.conf", "Procfile", ".env"]
    files = {f.path: f for f in rendered}
    assert files["config/web/a.conf"] == File("config/web/a.conf", "x\n", 0o600)
    assert files[".env"].mode == 0o600 and parse_env(files[".env"].content) == {"GREETING": 'hi "you"', "PORT": "6000"}
    procfile = files["Procfile"].content
    assert files["Procfile"].mode == 0o644
    processes = [l.split(":", 1)[0] for l in procfile.splitlines() if not l.startswith("#")]
    assert processes == ["db", "web"]
    assert "# web: waits for db (healthy); 2 replicas: honcho start -c web=2; restart always" in procfile


def test_render_refuses_a_dotenv_value_honcho_would_change(tmp_path: Path) -> None:
    plan = {"name": "x", "env": {"PATTERN": "a\\nb"}, "port_base": 5000, "services": []}
    with pytest.raises(DreamError, match="PATTERN: a backslash before n or t"):
        render(plan, Target(tmp_path, tmp_path / "out"))


# -- the renderer does no I/O: env files come in through the Target -------------------------------

def _env_file_project(tmp_path: Path) -> Path:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "layers").mkdir()
    path = tmp_path / "recipes" / "x.yaml"
    path.write_text("services:\n  a:\n    command: a\n    env_files: [base.env]\n    env: {B: own}\n"
                    "  b:\n    command: b\n    env_files: [base.env, more.env]\n")
    return path


def test_the_renderer_takes_env_files_from_the_target_and_reads_nothing(tmp_path: Path) -> None:
    plan = build_plan(load_recipe(_env_file_project(tmp_path), tmp_path).deployments["x"])
    target = Target(tmp_path, tmp_path / "out", {"base.env": {"A": "from base", "B": "base"},
                                                  "more.env": {"C": "more"}})
    procfile = next(f.content for f in RENDERERS["procfile"].render(plan, target) if f.path == "Procfile")
    lines = {line.split(":", 1)[0]: line for line in procfile.splitlines() if not line.startswith("#")}
    assert "A='from base' B=own " in lines["a"] and "C=" not in lines["a"]
    assert "A='from base' B=base C=more " in lines["b"]  # no file exists: nothing was read
    with pytest.raises(DreamError, match=r"^service b: env file more.env was not read before rendering$"):
        render(plan, Target(tmp_path, tmp_path / "out", {"base.env": {}}))


def test_the_host_reads_env_files_in_service_order_and_writes_what_was_rendered(tmp_path: Path) -> None:
    deployment = load_recipe(_env_file_project(tmp_path), tmp_path).deployments["x"]
    plan = build_plan(deployment)
    with pytest.raises(DreamError, match=r"^service a: env file .*base\.env: No such file or directory$"):
        host.read_env_files(plan, tmp_path)
    (tmp_path / "base.env").write_text("A=1\n")
    with pytest.raises(DreamError, match=r"^service b: env file .*more\.env: No such file or directory$"):
        host.render(deployment, tmp_path, RENDERERS["procfile"])
    assert not (tmp_path / "build").exists()  # nothing written before every file was read
    (tmp_path / "more.env").write_text("C=2\n")
    assert host.read_env_files(plan, tmp_path) == {"base.env": {"A": "1"}, "more.env": {"C": "2"}}
    out = host.render(deployment, tmp_path, RENDERERS["procfile"])
    assert out == tmp_path / "build" / "x" / "procfile"
    assert sorted(p.name for p in out.iterdir()) == [".env", "Procfile", "plan.json"]
    assert (out / ".env").stat().st_mode & 0o777 == 0o600
    assert "A=1 C=2 " in (out / "Procfile").read_text()
