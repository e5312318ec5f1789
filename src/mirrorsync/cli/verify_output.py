"""What ``verify`` shows: one line per problem on stdout, a progress bar on a terminal."""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mirrorsync.cli.render import print_json_line
from mirrorsync.text import unescaped
from mirrorsync.verify import Problem


class VerifyOutput:
    """A verify Reporter: problems to stdout as found; progress on stderr when it is a TTY."""

    def __init__(self, *, as_json: bool = False) -> None:
        self.as_json = as_json
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.problems = 0
        if sys.stderr.isatty():
            self._progress = Progress(
                TextColumn("verifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("specs, {task.fields[problems]} problems"),
                TimeElapsedColumn(),
                console=Console(file=unescaped(sys.stderr)),
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )

    def __enter__(self) -> VerifyOutput:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, total: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task("verify", total=total, problems=0)

    def advance(self, specs: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=specs, problems=self.problems)

    def problem(self, problem: Problem) -> None:
        self.problems += 1
        if self.as_json:  # one object per line, as events --json
            name, _, version = problem.package.partition("@")
            whole_stack = problem.hash == "-"
            print_json_line(
                {
                    "source": problem.source,
                    "release": problem.release,
                    "stack": problem.stack,
                    "hash": None if whole_stack else problem.hash,
                    "name": None if whole_stack else name,
                    "version": None if whole_stack else version,
                    "problem": problem.what,
                }
            )
            sys.stdout.flush()
        elif self._progress is not None and sys.stdout.isatty():
            self._progress.console.print(problem.line(), highlight=False, markup=False)
        else:
            print(problem.line(), flush=True)
