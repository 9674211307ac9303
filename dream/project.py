"""A dream project: a directory with ``recipes/`` and a two-line ``dodo.py``.

``dodo_globals`` is everything that dodo.py needs (doit's config and the task creators), so the
file a user keeps in their project never changes when dream does; ``init`` writes it.

Layer tasks run at once, in threads (doit's ``num_process`` with ``par_type: thread``), as many
as the cores this process may use: ``DREAM_JOBS=N`` sets another number (1: one after the
other), and doit's own ``-n N`` overrides both for one command. Compression (ISA-L, zstd),
hashing and the .debs' decompression release the GIL; pip is a process of its own. Every other
task (build, lock, load, run, shell, a user's own) runs in the main thread, as before. doit's
parallel runner is replaced by `ThreadRunner`: it reports each task as it starts it (so
``.  layer:x`` lines come in doit's order), and on Ctrl-C interrupts the tasks still running in
other threads and waits for them to clean up, so nothing half-written stays behind.
"""

from __future__ import annotations

import inspect
import os
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from doit import cmd_run, loader
from doit.exceptions import InvalidDodoFile
from doit.reporter import ConsoleReporter
from doit.runner import JobHold, JobTaskPickle, MThreadRunner, Runner

from dream.errors import DreamError
from dream.oci.compress import usable_cores
from dream.progress import install_line_output, whole_lines

DODO = """\
import dream.project  # dream's tasks for the recipes under recipes/: `doit list --all`
globals().update(dream.project.dodo_globals())
"""
STATE_DIR = ".dream"
INTERRUPTED = ("dream: interrupted; nothing half-written is kept (store writes are atomic), "
               "run it again to go on")
JOBS = "DREAM_JOBS"
IN_THREADS = "layer:"  # the tasks that run in threads; all others run in the main thread
UNWIND_S = 30.0  # how long Ctrl-C waits for the other threads' tasks to clean up


def _interrupted(kind: type[BaseException], value: BaseException, tb: TracebackType | None,
                 previous: Any = sys.excepthook) -> None:
    """Ctrl-C anywhere in doit (it lets KeyboardInterrupt through) is one line, not a traceback.
    Python still exits by SIGINT afterwards, so shells and CI see an interrupted command."""
    if issubclass(kind, KeyboardInterrupt):
        print(f"\n{INTERRUPTED}", file=sys.stderr)
    else:
        previous(kind, value, tb)


def jobs() -> int:
    """How many tasks run at once: ``DREAM_JOBS``, else the cores this process may run on."""
    setting = os.environ.get(JOBS, "").strip()
    if setting:
        try:
            count = int(setting)
        except ValueError:
            count = 0
        if count < 1:
            raise DreamError(f"{JOBS}={setting!r}: not a number of tasks to run at once (1 or more)")
        return count
    return usable_cores()


class Reporter(ConsoleReporter):
    """doit's console reporter, writing whole lines (it holds the original ``sys.stdout``)."""

    def __init__(self, outstream: Any, options: Any) -> None:
        super().__init__(whole_lines(outstream), options)


def note_selection(task_dispatcher: Any) -> None:
    """Tell the task layer which layer tasks this run may execute (the selected tasks and what
    they depend on), so that a fetch plan downloads for those only: `doit layer:X/debian`
    fetches no wheels."""
    from dream.tasks import select_layers
    tasks, seen, stack = task_dispatcher.tasks, set(), list(task_dispatcher.selected_tasks or ())
    while stack:
        name = stack.pop()
        if name in seen or name not in tasks:
            continue
        seen.add(name)
        stack += [*tasks[name].task_dep, *tasks[name].setup_tasks]
    select_layers({name for name in seen if name.startswith(IN_THREADS)} if seen else None)


class SerialRunner(Runner):
    """doit's serial runner (``DREAM_JOBS=1``), which notes the selection too."""

    def run_tasks(self, task_dispatcher: Any) -> None:
        note_selection(task_dispatcher)
        super().run_tasks(task_dispatcher)


class ThreadRunner(MThreadRunner):
    """doit's thread runner (see the module docstring), installed in place of doit's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._job_q: Any = None

    def _run_start_processes(self, job_q: Any, result_q: Any) -> Any:
        self._job_q = job_q
        return super()._run_start_processes(job_q, result_q)

    def get_next_job(self, completed: Any) -> Any:
        """doit's MRunner.get_next_job, but a task that is not a layer task runs here, in the
        main thread (the supervisor of `run:` sets signal handlers, `shell:` owns the terminal,
        a user's own task expects nothing else), and every task is reported as it starts."""
        if self._stop_running:
            return None  # gentle stop
        node = completed
        while True:
            try:
                node = self.task_dispatcher.generator.send(node)
                if node == "hold on":
                    self.free_proc += 1
                    return JobHold()
            except StopIteration:
                return None
            if not self.select_task(node, self.tasks):
                continue
            task = node.task
            self.reporter.execute_task(task)  # here, in doit's order
            if task.name.startswith(IN_THREADS):
                # doit's PythonAction swaps sys.stdout/sys.stderr for a capturing tee around
                # each action: from several threads at once they would be left pointing at one
                # task's capture. Without capture the task writes to the streams as they are.
                task.io.capture = False
                return JobTaskPickle(task)
            self.process_task_result(node, self.execute_task(task))
            if self._stop_running:
                return None

    def execute_task(self, task: Any) -> Any:
        """Runner.execute_task less the report, which `get_next_job` made."""
        if task.teardown:
            self.teardown_list.append(task)
        return task.execute(self.stream)

    def run_tasks(self, task_dispatcher: Any) -> None:
        note_selection(task_dispatcher)
        try:
            super().run_tasks(task_dispatcher)
        except KeyboardInterrupt:
            self._stop_running = True
            self._interrupt_workers()
            raise

    def _interrupt_workers(self) -> None:
        """Raise KeyboardInterrupt in every thread still running a task (as Ctrl-C does in a
        serial build: its ``finally`` blocks remove temporary files and scratch directories),
        wake the idle ones, and wait a while for all of them."""
        workers = [thread for thread in threading.enumerate()
                   if isinstance(thread, MThreadRunner.DaemonThread) and thread.is_alive()]
        for thread in workers:
            if thread.ident is not None:
                import ctypes  # only on Ctrl-C
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                           ctypes.py_object(KeyboardInterrupt))
            if self._job_q is not None:
                self._job_q.put(None)  # an idle thread waits for a job: None ends it
        deadline = time.monotonic() + UNWIND_S
        for thread in workers:
            thread.join(max(0.0, deadline - time.monotonic()))


def task_creators(namespace: dict[str, Any], command_names: Any) -> list[tuple[str, Any, int]]:
    """doit 0.37's `loader._get_task_creators` (installed in its place), but the line each
    creator is sorted by comes from its code object: doit's `inspect.getsourcelines` tokenizes
    every creator's source to find it, 5 ms of a 0.2 s no-op. It is the same line (the first
    decorator's or the ``def``); a callable without code is still asked doit's way."""
    found = []
    for name, ref in namespace.items():
        if ref is loader.task_params:
            continue
        if name.startswith(loader.TASK_STRING) and (inspect.isfunction(ref) or inspect.ismethod(ref)):
            task_name = name[len(loader.TASK_STRING):]
        elif hasattr(ref, "create_doit_tasks"):
            ref = ref.create_doit_tasks
            task_name = getattr(ref, "basename", name)
        else:
            continue
        if task_name in command_names:
            raise InvalidDodoFile(f"Task can't be called '{task_name}' because this is a command name."
                                  " Please choose another name.")
        target = inspect.unwrap(ref)
        code = getattr(getattr(target, "__func__", target), "__code__", None)  # a method's function
        found.append((task_name, ref, code.co_firstlineno if code is not None else inspect.getsourcelines(ref)[1]))
    return found


def dodo_globals(root: Path | None = None) -> dict[str, Any]:
    """``DOIT_CONFIG`` and the ``task_*`` creators for the project at ``root`` (default: cwd).

    A bad ``DREAM_STORE``/``DREAM_CACHE`` or an unwritable project stops here with one line.
    """
    sys.excepthook = _interrupted
    install_line_output()  # tasks print from several threads: whole lines only
    from dream.tasks import dodo_tasks
    from dream.workdirs import check_environment
    root = root or Path.cwd()
    try:
        check_environment()
        count = jobs()
        (root / STATE_DIR).mkdir(exist_ok=True)
    except DreamError as exc:
        print(f"dream: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:
        print(f"dream: cannot create {root / STATE_DIR}: {exc.strerror}", file=sys.stderr)
        raise SystemExit(1) from None
    from dream.doitdb import install
    install()  # doit.json written by temp-and-rename (doit's own json backend truncates first)
    cmd_run.MThreadRunner = ThreadRunner  # doit picks its runner classes by these names
    cmd_run.Runner = SerialRunner
    loader._get_task_creators = task_creators  # doit calls it after reading dodo.py
    config = {"backend": "json", "dep_file": f"{STATE_DIR}/doit.json", "default_tasks": ["build"],
              "num_process": count if count > 1 else 0, "par_type": "thread", "reporter": Reporter}
    return {"DOIT_CONFIG": config, **dodo_tasks(root)}


def init(root: Path) -> list[str]:
    """Write ``dodo.py`` and make ``recipes/`` in ``root``; return what was made.

    An existing dodo.py is never overwritten (it may be the user's own).
    """
    dodo = root / "dodo.py"
    if dodo.exists():
        raise DreamError(f"{dodo} already exists; not overwriting it (delete it to start over)")
    made = []
    recipes = root / "recipes"
    if not recipes.is_dir():
        recipes.mkdir(parents=True)
        made.append("recipes/")
    temporary = dodo.with_name(".dodo.py.tmp")
    temporary.write_text(DODO)
    temporary.replace(dodo)
    return ["dodo.py", *made]
