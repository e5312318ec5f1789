"""``mirrorsync`` command line. Parses arguments, runs one command, prints, exits.

Exit codes (README, "Exit codes"): 0 success, 1 some stack, source, check or
delivery failed, 2 configuration or usage error, 66 no database yet, 73 the
target of ``db migrate-to`` already holds a history, 75 another run holds the
lock, 128 + N ended by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP). A reader
that goes away (``| head``) ends the command quietly with 0.
"""

from __future__ import annotations

import gc
import sys

from mirrorsync import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (start-up)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable, Sequence
    from typing import NoReturn

    Command = Callable[[argparse.Namespace], Awaitable[int]]

# Start-up is paid by every command, every completion and every timer run: this module
# imports nothing more at first. ``--version`` answers from here; the parser, logging
# and each command's module are imported when they are needed (issue 31, start-up).
# tests/test_startup.py fails when a heavy module (aiohttp, httpx, psycopg, rich, the
# delivery package) is imported by --version, --help or status.

#: Each command's module and function, imported only when that command runs: ``status``
#: does not pay for the delivery chain, ``--help`` for none of them.
COMMANDS: dict[str, str] = {
    "once": "cmd_sync:once",
    "mirror": "cmd_mirror:mirror",
    "status": "cmd_status:status",
    "history": "cmd_query:history",
    "diff": "cmd_query:diff",
    "at": "cmd_query:at",
    "specs": "cmd_query:specs",
    "show": "cmd_query:show",
    "events": "cmd_query:events",
    "webhooks": "cmd_webhooks:webhooks",
    "verify": "cmd_verify:verify",
    "export": "cmd_export:export",
    "db": "cmd_db:db",
    "forget": "cmd_db:forget",
}


#: Commands that read a SQLite database with no event loop (store/readonly.py): the
#: function answers None when the database needs the loop (PostgreSQL), and the
#: command's own handler runs then.
NO_LOOP: dict[str, str] = {
    "status": "cmd_status:status_now",
    "_names": "completion:names_now",
}


def command_handler(name: str) -> Command:
    """The function that runs command ``name``, its module imported now."""
    import importlib

    module, function = COMMANDS[name].split(":")
    handler: Command = getattr(importlib.import_module(f"mirrorsync.cli.{module}"), function)
    return handler


def entry() -> NoReturn:
    """``mirrorsync`` as installed (the console script) and ``python -m mirrorsync``:
    :func:`main`, then the exit.

    A command that ran no event loop (``--version``, ``--help``, a usage error,
    ``status`` of a SQLite file, completion's names), started no thread and left no
    exit handler (``atexit``: coverage, logging, a finalizer) has nothing left to end
    but the interpreter, whose finalization then tears down every module and object
    it loaded: ~3 ms, a tenth of ``status`` (issue 31, start-up). Such a command's
    output is flushed and the process ends at once with its status (``os._exit``),
    as Instagram's servers skip the same teardown. Any other command, an exception
    that escapes, or an interrupt ends as Python ends it."""
    _open_closed_streams()
    try:
        code = main()
    except SystemExit as exc:  # argparse: --help, a usage error (printed already)
        if not (exc.code is None or isinstance(exc.code, int)):
            raise
        code = exc.code or 0
    if not _loop_ran and "threading" not in sys.modules and _no_exit_handlers():
        _end_at_once(code)
    sys.exit(code)


def _open_closed_streams() -> None:
    """A standard stream closed before the command started (``>&-``; Python makes it
    None) is pointed at /dev/null: what would be printed there is dropped, as for a
    reader gone, and the exit status still says what happened (``status --check``
    under a monitor that closed stdout), never a traceback."""
    import os

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115


def _no_exit_handlers() -> bool:
    """Whether no ``atexit`` handler waits for Python's exit. CPython says how many there
    are (``atexit._ncallbacks``); another interpreter is assumed to have some."""
    import atexit

    count = getattr(atexit, "_ncallbacks", None)
    return count is not None and count() == 0


def _end_at_once(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process with ``code``, skipping the
    interpreter's teardown; a reader gone from stdout is 0, as in :func:`_reader_gone`,
    and a stream that cannot be flushed 120, as Python says at its exit."""
    import os

    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = 0
    except (OSError, ValueError):
        code = code or 120
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        code = code or 120
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Everything it prints passes ``text.escape_output``: a value
    from outside (a reason phrase, a spec name) cannot reach the terminal as an
    escape sequence, a bidi override or a line separator."""
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # not even the parser
        sys.stdout.write(f"mirrorsync {__version__}\n")
        return 0
    from mirrorsync.text import EscapedStream

    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = EscapedStream(stdout), EscapedStream(stderr)
    # No cyclic garbage collection while the modules load: the objects they make live
    # as long as the process, and a full collection among them costs a short command
    # (status, --help) a millisecond or more. A command that runs on turns it on again.
    global _collecting
    _collecting = gc.isenabled()
    gc.disable()
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = stdout, stderr
        _collect_again()


#: Whether garbage was collected when :func:`main` began (a caller in-process may not).
_collecting = True


def _collect_again() -> None:
    if _collecting:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    from mirrorsync.cli.arguments import NO_CONFIG, build_parser

    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors end here: nothing more imported

    from mirrorsync.cli.render import TableStyle, set_table_style
    from mirrorsync.errors import EXIT_OK
    from mirrorsync.logs import setup_logging, stderr_is_terminal

    if args.command not in NO_LOOP:  # a command that may run long collects garbage
        _collect_again()
    if args.command in NO_CONFIG and args.config is not None:
        parser.error(f"{args.command} reads no configuration file: leave out -c {args.config}")
    if args.format == "tsv" and getattr(args, "json", False):
        parser.error("--format tsv and --json: choose one")
    set_table_style(TableStyle(format=args.format, headers=not args.no_headers))
    setup_logging(  # a command with no event loop (status) imports logging only if it logs
        args.verbose,
        args.quiet,
        args.log_format,
        interactive=stderr_is_terminal(),
        lazy=args.command in NO_LOOP,
    )
    if args.command == "completion":  # needs no configuration: only the parser
        from mirrorsync.cli.completion import script

        sys.stdout.write(script(parser, args.shell))
        return EXIT_OK
    if args.command == "help":
        from mirrorsync.cli.cmd_help import show_topic

        handler: Command = show_topic
    elif args.command == "config" and args.config_command == "init":
        from mirrorsync.cli.cmd_help import config_init

        handler = config_init
    elif args.command == "config":
        from mirrorsync.cli.config_check import config_check

        handler = config_check
    elif args.command == "serve":
        from mirrorsync.cli.cmd_serve import serve  # the web stack only when serving

        handler = serve
    elif args.command == "bundle":
        from mirrorsync.cli.cmd_bundle import bundle  # air-gapped sites: bundles of a copy

        handler = bundle
    elif args.command == "_names":  # for the shell completion scripts
        from mirrorsync.cli.completion import names

        handler = names
    elif args.command == "demo":
        from mirrorsync.cli.demo import run_demo  # only the demo needs the fixture server

        handler = run_demo
    else:
        handler = command_handler(args.command)
    try:
        code = None
        if args.command in NO_LOOP:  # a SQLite database: read with no event loop
            import importlib

            module, function = NO_LOOP[args.command].split(":")
            now = getattr(importlib.import_module(f"mirrorsync.cli.{module}"), function)
            code = _run_now(now, args)
        if code is None:
            code = _run(handler, args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
    except BrokenPipeError:
        return _reader_gone()
    return code


#: Whether a command ran in the event loop in this process (:func:`entry` then lets
#: Python end it: the loop's threads and files are Python's to wind up).
_loop_ran = False


def _run(handler: Command, args: argparse.Namespace) -> int:
    import anyio  # the event loop: only a command that runs needs it

    global _loop_ran
    _loop_ran = True
    from mirrorsync.logs import ensure_logging

    ensure_logging()  # set up lazily for a command that ran with no loop until here
    _collect_again()

    def run() -> int:
        try:
            return anyio.run(_until_signalled, handler, args)
        except BaseExceptionGroup as group:
            raise _first_error(group) from None

    code = _reported(run)
    assert code is not None
    return code


def _run_now(
    handler: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> int | None:
    """Run a command that needs no event loop (None: it does after all); SIGINT,
    SIGTERM and SIGHUP end it as they end any command (one line, 128 + N)."""
    from mirrorsync.cli import signals

    return _reported(lambda: signals.run_stoppable(handler, args))


def _reported(run: Callable[[], int | None]) -> int | None:
    """``run()``, with its error reported on one line and turned into its exit status.

    The error's text is printed as its raiser wrote it (escaped, never rewritten by
    ``units.humane``): it names what failed (a stack, a release glob, a file, a URL)
    as the user or upstream wrote it, and formats its own figures."""
    from mirrorsync.errors import EXIT_PARTIAL, MirrorsyncError
    from mirrorsync.logs import print_line
    from mirrorsync.units import verbatim

    try:
        return run()
    except BrokenPipeError:
        raise
    except MirrorsyncError as exc:
        print_line(f"mirrorsync: error: {verbatim(exc)}")
        return exc.exit_code
    except KeyboardInterrupt:
        print_line("mirrorsync: interrupted")
        return 130
    except OSError as exc:
        print_line(f"mirrorsync: error: {verbatim(exc)}")
        return EXIT_PARTIAL


async def _until_signalled(handler: Command, args: argparse.Namespace) -> int:
    """Run the command; SIGINT, SIGTERM or SIGHUP end it with one line (module signals)."""
    import anyio

    from mirrorsync.cli import signals
    from mirrorsync.errors import EXIT_PARTIAL
    from mirrorsync.logs import print_line

    with anyio.open_signal_receiver(*signals.HANDLED) as received:
        async with anyio.create_task_group() as tg:
            state = signals.Signals(tg.cancel_scope)
            token = signals.CURRENT.set(state)

            async def watch() -> None:
                async for signum in received:
                    state.deliver(signum)

            tg.start_soon(watch)
            code = EXIT_PARTIAL
            try:
                code = await handler(args)
            finally:
                signals.CURRENT.reset(token)
                tg.cancel_scope.cancel()
    if state.received is not None:
        print_line(state.message)
        return state.exit_code
    return code


def _reader_gone() -> int:
    """stdout's reader left (``mirrorsync events | head -1``): stop quietly, as git does.

    Nothing more can be printed; stdout is pointed at /dev/null so that Python's
    final flush does not complain either. Exit 0: what was read was correct.
    """
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 0


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """A task group's failure, reduced to the one error worth reporting."""
    from mirrorsync.errors import MirrorsyncError

    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if isinstance(exc, MirrorsyncError | KeyboardInterrupt | OSError):
            return exc
    return group
