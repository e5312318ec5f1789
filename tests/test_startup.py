"""Start-up imports only what the command uses (issue 31, start-up row).

``--version``, ``--help`` and ``status`` are run as real processes under
``python -X importtime``; each fails the test if it imported a heavy module it does
not use: the HTTP stacks (aiohttp, httpx), the PostgreSQL driver, rich, and
mirrorsync's delivery, fetch, sync and copy machinery. ``--version`` and
``--help`` load neither the configuration's parser nor the store, nor ``typing``,
``dataclasses``, ``logging``, ``json`` or ``shutil``, and build no command's parser
but the one chosen. ``status`` and ``_names`` (shell completion's names) of a
SQLite database run with no event loop (asyncio, anyio, aiosqlite:
store/readonly.py) and print, byte for byte, what the event-loop path
(PostgreSQL's) prints for the same database. The figures
(milliseconds, ratio to ``python -c pass``) are printed by
``benchmarks/bench_startup.py``; a test asserts imports, never a timing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from conftest import QUICK_RETRIES, REPO, catalog_config_text, run_cli, write_config
from mirrorsync.cli.arguments import build_parser
from mirrorsync.cli.parser import _LazyParsers
from mirrorsync.fixture.build import build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.store import Store
from receiver import Receiver, new_secret

#: Never needed to print a version, the help or the status of the history.
HEAVY = (
    "aiohttp",
    "httpx",
    "httpcore",
    "psycopg",
    "rich",
    "mirrorsync.delivery",
    "mirrorsync.fetch",
    "mirrorsync.sync",
    "mirrorsync.mirrors.run",
    "mirrorsync.fixture",
)
#: Also not needed before a command runs: the configuration, the store, the event loop.
NOT_BEFORE_A_COMMAND = (
    *HEAVY,
    "yaml",
    "msgspec",
    "asyncio",
    "anyio",
    "aiosqlite",
    "mirrorsync.config",
    "mirrorsync.store",
)
#: What --version and --help print needs none of these either (each was imported once).
NOT_FOR_HELP = (
    *NOT_BEFORE_A_COMMAND,
    "typing",
    "dataclasses",
    "logging",
    "json",
    "datetime",
    "shutil",
    "mirrorsync.redact",
    "mirrorsync.cli.render",
)
#: ``status`` of a SQLite database: read with no event loop.
NO_LOOP = (*HEAVY, "asyncio", "anyio", "aiosqlite", "mirrorsync.store.aio")
#: The store's writers and history queries: status reads through store/overview.py.
WRITERS = ("mirrorsync.store.queries", "mirrorsync.store.mirrors", "mirrorsync.store.webhooks")
#: ``status`` again, its compiled configuration cached (config_cache): not its parser
#: either, nor typing (TYPE_CHECKING imports only), dataclasses (records.record),
#: logging (configured when something logs: logs.setup_logging(lazy=True)), pathlib
#: and urllib.parse (the database named by its text: location.ReadLocation) or the
#: store's claims (PostgreSQL's advisory locks).
WARM = (
    *NO_LOOP,
    "yaml",
    "msgspec",
    "mirrorsync.config",
    "typing",
    "dataclasses",
    "logging",
    "pathlib",
    "urllib.parse",
    "mirrorsync.store.claims",
    *WRITERS,
)
#: The same with a published copy: its check on disk (mirrors/ondisk.py) reads the
#: copy's index manifest, whose parsed answer is cached under the bytes' sha256: not
#: the formats' msgspec decoder (with typing and dataclasses) nor the copy machinery.
WARM_WITH_A_COPY = (*WARM, "mirrorsync.formats", "mirrorsync.mirrors.files", "hashlib")
CONFIG = (
    "sources:\n  - {name: s, kind: catalog, url: 'http://127.0.0.1:9/catalog.json',"
    " bucket_urls: {spack-binaries: 'http://127.0.0.1:9/'}}\n"
)
_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(\s*)(\S+)$")


def imported(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``python -X importtime -m mirrorsync ARGS``: the process and every module it
    imported (importtime's report on stderr, one line per module)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mirrorsync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    modules = {m[2] for line in done.stderr.splitlines() if (m := _LINE.match(line))}
    assert "mirrorsync" in modules or "mirrorsync.cli" in modules, done.stderr[-2000:]
    return done, modules


def heavy(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules for n in names if m == n or m.startswith(n + "."))


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("once", "--help")])
def test_version_and_help_import_no_configuration_store_or_transport(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    done, modules = imported(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "mirrorsync" in done.stdout
    assert heavy(modules, NOT_FOR_HELP) == []


@pytest.mark.parametrize("database", ["empty", "none", "synced"])
def test_status_imports_no_transport_delivery_or_sync(tmp_path: Path, database: str) -> None:
    """Cold (the configuration read in full, then cached) and warm (from the cache:
    neither YAML nor msgspec), with the same output, byte for byte."""
    db = tmp_path / "ms.db"
    (tmp_path / "mirrorsync.yaml").write_text(f"{CONFIG}database: {db}\n")
    if database == "synced":  # mirrorsync demo's: 7 stacks synced twice, offline
        demo = run_cli("demo", cwd=tmp_path)
        assert demo.returncode == 0, demo.stderr[-2000:]
        (tmp_path / "mirrorsync.yaml").unlink()
        (tmp_path / "mirrorsync-demo" / "mirrorsync.yaml").rename(tmp_path / "mirrorsync.yaml")
    if database == "empty":  # a database with no stack yet: status says so, exit 66

        async def create() -> None:
            store = await Store.open(db)
            await store.close()

        anyio.run(create)
    done, modules = imported("status", cwd=tmp_path)
    assert done.returncode == (0 if database == "synced" else 66), done.stderr[-2000:]
    assert heavy(modules, NO_LOOP) == []
    assert "mirrorsync.config" in modules  # it did read the configuration, in full
    if database != "none":
        assert "mirrorsync.store.readonly" in modules
    again, warm = imported("status", cwd=tmp_path)  # the compiled configuration, cached
    assert heavy(warm, WARM) == []
    assert "mirrorsync.config_cache" in warm
    assert (again.returncode, again.stdout, _without_importtime(again.stderr)) == (
        done.returncode,
        done.stdout,
        _without_importtime(done.stderr),
    )


def _without_importtime(stderr: str) -> str:
    return "".join(f"{ln}\n" for ln in stderr.splitlines() if not ln.startswith("import time:"))


def test_help_builds_only_the_parser_of_the_command_chosen() -> None:
    """``--help`` lists every command from its summary, building none of their
    parsers; ``status ...`` builds status's alone; the man page and the completion
    scripts (``items()``) build them all."""
    parser = build_parser()
    (lazy,) = (a.choices for a in parser._actions if isinstance(a.choices, _LazyParsers))
    assert isinstance(lazy, _LazyParsers)

    def built() -> list[str]:
        return [name for name, sub in dict.items(lazy) if sub is not None]

    assert "status" in parser.format_help()
    assert built() == []
    args = parser.parse_args(["status", "--json"])
    assert (args.command, args.json) == ("status", True)
    assert built() == ["status"]
    assert len(lazy.items()) == len(built()) == 21


def _in_the_loop(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``status`` or ``_names`` by the event-loop path PostgreSQL takes (aiosqlite, the
    same readers), on the same SQLite file: the CLI is told the no-loop path does not
    apply."""
    script = (
        "import sys\n"
        "from mirrorsync import cli\n"
        "from mirrorsync.cli import cmd_status, completion\n"
        "cmd_status.status_now = completion.names_now = lambda args: None\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'tests'}"}
    return subprocess.run(
        [sys.executable, "-c", script, "-c", str(config), *args],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_and_names_with_no_event_loop_print_what_the_loop_path_prints(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    """A database with stacks, a failed sync, a local copy and a webhook whose events
    wait (its receiver answers 500): every form of ``status`` is the same, byte for
    byte and exit status, by both paths."""
    secret = new_secret()
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    specs = {
        "root": [spec_node(f"lib{i}", "1.0", fake_hash(f"startup:{i}")) for i in range(4)],
        "e4s": [spec_node(f"e4s{i}", "2.0", fake_hash(f"startup:e{i}")) for i in range(2)],
    }
    build_catalog_from_specs(docroot, {"develop": specs})
    with Receiver(secret, status=500) as down:
        extra = (
            f"mirrors:\n  - {{name: local, path: {tmp_path / 'copy'}, source: test,"
            " release: develop, stacks: [root]}\n"
            f"webhooks:\n  - {{name: down, url: '{down.url}', secret_file: {secret_file},"
            " max_age: 1d}"
        )
        text = catalog_config_text(tmp_path, server, extra=extra, http=QUICK_RETRIES)
        config = write_config(tmp_path / "c.yaml", text)
        assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 1  # the webhook
        specs["e4s"].append(spec_node("e4s9", "2.0", fake_hash("startup:e9")))
        build_catalog_from_specs(docroot, {"develop": specs})
        server.add_fault("/develop/e4s/*", "status", status=500, times=None)
        assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 1
    for args in (
        ("status",),
        ("status", "--json"),
        ("status", "--check"),
        ("status", "--check", "--json"),
        ("status", "--release", "develop", "--stack", "root"),
        ("status", "--stack", "e4s", "--json"),
        ("status", "--stack", "nothing"),
        ("_names", "stack"),  # what shell completion offers: each TAB pays the start-up
        ("_names", "release"),
        ("_names", "source"),
        ("_names", "mirror"),
        ("_names", "webhook"),
    ):
        done, modules = imported("-c", str(config), *args, cwd=tmp_path)
        assert heavy(modules, NO_LOOP) == [], args
        if args != ("status",):  # the first status filled the cache: completion reads it too
            assert heavy(modules, WARM_WITH_A_COPY) == [], args
        loop = _in_the_loop(config, *args)
        assert "Traceback" not in loop.stderr + done.stderr, loop.stderr + done.stderr
        importtime = [ln for ln in done.stderr.splitlines() if ln.startswith("import time:")]
        stderr = "".join(f"{ln}\n" for ln in done.stderr.splitlines() if ln not in importtime)
        assert (done.returncode, done.stdout, stderr) == (
            loop.returncode,
            loop.stdout,
            loop.stderr,
        ), args
    names = run_cli("-c", str(config), "_names", "stack", cwd=tmp_path)
    assert names.stdout == "e4s\nroot\n", names.stdout
    hooks = run_cli("-c", str(config), "_names", "webhook", cwd=tmp_path)
    assert hooks.stdout == "down\n", hooks.stdout
    table = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert "develop/e4s" in table.stdout and "failed" in table.stdout, table.stdout
    assert "local" in table.stdout and "down" in table.stdout, table.stdout


#: Runs ``mirrorsync ARGS`` through the installed entry point with an object whose
#: finalizer says when the interpreter tears its modules down; ``--handler`` first:
#: an exit handler registered before the command, as coverage's would be.
_TEARDOWN = """
import os, sys
class Marker:
    def __del__(self):
        os.write(2, b"torn down\\n")
marker = Marker()
if sys.argv[1] == "--handler":
    import atexit
    atexit.register(os.write, 2, b"exit handler ran\\n")
del sys.argv[1]  # --handler or --plain
sys.argv[0] = "mirrorsync"
from mirrorsync.cli import entry
entry()
"""


def _ended(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-c", _TEARDOWN, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_command_with_no_event_loop_ends_without_the_interpreters_teardown(
    tmp_path: Path,
) -> None:
    """``entry`` ends ``--help``, a usage error and ``status`` of a SQLite file at
    once, their output flushed whole, with the status Python's exit would give; with
    an exit handler registered, or after a command that ran the event loop, Python
    ends the process as usual (the handler runs, modules are torn down)."""
    (tmp_path / "mirrorsync.yaml").write_text(f"{CONFIG}database: {tmp_path / 'ms.db'}\n")

    async def create() -> None:
        store = await Store.open(tmp_path / "ms.db")
        await store.close()

    anyio.run(create)
    for args, code in (
        (("--help",), 0),
        (("once", "--help"), 0),
        (("status",), 66),
        (("status", "--bogus"), 2),
    ):
        at_once = _ended("--plain", *args, cwd=tmp_path)
        assert "torn down" not in at_once.stderr, (args, at_once.stderr)
        usual = _ended("--handler", *args, cwd=tmp_path)
        assert usual.stderr.endswith("exit handler ran\ntorn down\n"), (args, usual.stderr)
        assert (at_once.returncode, at_once.stdout) == (code, usual.stdout), args
        assert at_once.stderr == usual.stderr.removesuffix("exit handler ran\ntorn down\n")
    assert len(at_once.stdout) == 0 and "--bogus" in at_once.stderr
    loop = _ended("--plain", "webhooks", "list", cwd=tmp_path)  # runs in the event loop
    assert loop.returncode == 0 and loop.stderr.endswith("torn down\n"), loop.stderr
    logged = _ended("--plain", "completion", "bash", cwd=tmp_path)  # logging: its handler
    assert logged.returncode == 0 and logged.stderr.endswith("torn down\n"), logged.stderr


def test_completion_imports_no_configuration_or_store(tmp_path: Path) -> None:
    done, modules = imported("completion", "bash", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert heavy(modules, NOT_BEFORE_A_COMMAND) == []


def test_the_configuration_is_read_by_libyaml_with_the_python_parsers_answers() -> None:
    """libyaml parses the configuration (a tenth of the Python parser's time, 3 ms of
    every command's start); what it reads is what the Python parser reads, and a
    document it refuses is refused with the Python parser's words, line and column."""
    import yaml

    from mirrorsync.cli.topics import STARTER_CONFIG
    from mirrorsync.config import parse_config
    from mirrorsync.config.yaml_loader import _FastLoader, _Loader
    from mirrorsync.config.yaml_loader import load_yaml as _load
    from mirrorsync.errors import ConfigError

    assert _FastLoader.__mro__[2] is getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = STARTER_CONFIG + "x: [1, yes, 0o17, 2024-01-02, ~, 1.5e3, !!str 7, &a {k: v}]\n"
    assert _load(text) == yaml.load(text, Loader=_Loader)
    for bad, says in (
        ("sources: [", "invalid YAML at line 1, column 11: expected the node content"),
        ("a: *nope\n", "invalid YAML at line 1, column 4: found undefined alias 'nope'"),
        ("a: 1\na: 2\n", "key 'a' given twice (lines 1 and 2); keep one"),
        ("sources: " + "[" * 2000, "invalid YAML: nested too deeply"),
    ):
        with pytest.raises(ConfigError) as raised:
            parse_config(bad, "f.yaml")
        assert says in str(raised.value), (bad[:20], str(raised.value))


def test_a_databases_version_is_checked_against_the_migrations_names() -> None:
    """Opening a database (status) checks its version against the bundled migrations'
    numbers and names, read from the file names alone: the same list the migrations
    themselves give, in every dialect."""
    from mirrorsync.store.dialect import POSTGRESQL, SQLITE
    from mirrorsync.store.schema import migration_names, migrations

    names = migration_names()
    assert names and names == sorted(names)
    for dialect in (SQLITE, POSTGRESQL):
        assert [(n, name) for n, name, _ in migrations(dialect)] == names


#: Run in a child: every ``re.compile`` made from mirrorsync's own code is written out
#: (its module and pattern), while the modules every command imports load and the
#: command given runs (in this process, as ``python -m mirrorsync`` runs it).
_SPY_ON_PATTERNS = """
import re, sys
src = sys.argv[1]
made = []
real = re.compile
def spy(pattern, flags=0):
    where = sys._getframe(1).f_code.co_filename
    if where.startswith(src):
        made.append(where[len(src):] + " " + str(pattern))
    return real(pattern, flags)
re.compile = spy
import mirrorsync.text, mirrorsync.units, mirrorsync.redact, mirrorsync.errors
import mirrorsync.cli.parser, mirrorsync.cli.arguments, mirrorsync.cli.render
print(len(made), file=sys.__stderr__)
from mirrorsync import cli
try:
    code = cli.main(sys.argv[2:])
finally:
    for m in made:
        print(m.replace(chr(10), " "), file=sys.__stderr__)
sys.exit(code)
"""


def _patterns_compiled(*args: str, cwd: Path) -> tuple[int, list[str]]:
    """(count made by importing the modules, every pattern made by the end) of a child."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    src = str(REPO / "src" / "mirrorsync") + os.sep
    done = subprocess.run(
        [sys.executable, "-c", _SPY_ON_PATTERNS, src, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    first, *made = done.stderr.splitlines()
    return int(first), [line for line in made if not line.startswith("mirrorsync:")]


def test_patterns_are_compiled_when_first_used_not_at_start_up(tmp_path: Path) -> None:
    """The escapes of every write (text.py), the human units' rewrites (units.py), the
    masks of secrets in URLs (redact.py) and the SQL dialect's translations compile
    their patterns when a text first needs them (``text.compiled``), not when they are
    imported: ``--help`` compiles none of mirrorsync's, and a warm ``status`` whose
    lines hold neither a URL nor a control character only the two it reads with (the
    migrations' file names, the configuration's ``$VARIABLES``) and, when a line may
    hold a figure, humane's."""
    imported, made = _patterns_compiled("--help", cwd=tmp_path)
    assert (imported, made) == (0, [])
    (tmp_path / "mirrorsync.yaml").write_text(f"{CONFIG}database: {tmp_path / 'ms.db'}\n")

    async def create() -> None:
        store = await Store.open(tmp_path / "ms.db")
        await store.close()

    anyio.run(create)
    for _ in range(2):  # cold (the full load, which compiles its own), then warm
        imported, made = _patterns_compiled("status", cwd=tmp_path)
    assert imported == 0
    modules = sorted({m.split(" ", 1)[0] for m in made})
    assert modules == ["config_cache.py", "store/schema.py"], made
    assert not [m for m in made if "\x00" in m or "userinfo" in m or "INTEGER" in m], made
