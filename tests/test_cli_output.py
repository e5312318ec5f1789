"""The command line as scripts and people use it: pipes, queries, usage errors, human units.

Every test runs ``python -m mirrorsync`` as a real process against a real SQLite
file written through the store's own functions (``bigdb``), or synced from the
fixture server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from bigdb import build_history, generated_spec
from conftest import REPO, catalog_config_text, json_lines, run_cli
from mirrorsync.fixture.build import build_from_seed
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.formats.index import SpecInfo
from mirrorsync.store import Store, writes

RELEASE = ("--release", "develop", "--stack", "root")


def write_config(tmp_path: Path, database: Path | str, name: str = "mirrorsync.yaml") -> Path:
    config = tmp_path / name
    # The histories here are written without a manifest crawl: none is configured
    # (with one, status would rightly report every manifest as never fetched).
    config.write_text(
        f"database: {database}\nsources: [{{name: test, kind: catalog, manifests: none}}]\n"
    )
    return config


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """develop/root: 3 versions of 1,000 added specs each (Nov 20, 21, 22); develop/e4s: 3 x 5."""
    path = tmp_path_factory.mktemp("history") / "state.db"
    build_history(path, stacks={("develop", "root"): 1000, ("develop", "e4s"): 5}, versions=3)
    return path


@pytest.fixture
def config(tmp_path: Path, history_db: Path) -> Path:
    return write_config(tmp_path, history_db)


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(config), *args, cwd=config.parent)


# -- 1. a reader that goes away ----------------------------------------------------

PRINTING = [
    ("events",),
    ("events", "--json"),
    ("events", "--reverse"),
    ("at", *RELEASE, "3"),
    ("at", *RELEASE, "3", "--json"),
    ("specs", *RELEASE),
    ("specs", *RELEASE, "--json"),
    ("diff", *RELEASE, "0", "3"),
    ("diff", *RELEASE, "0", "3", "--json"),
]


@pytest.mark.parametrize("command", PRINTING, ids=lambda c: " ".join(c))
def test_a_reader_that_goes_away_ends_the_command_quietly(
    config: Path, command: tuple[str, ...]
) -> None:
    """`mirrorsync events --json | head -1`: no traceback, exit 0, as `git log | head`."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mirrorsync", "-c", str(config), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=config.parent,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # what `head -1` reads, then it exits
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, stderr
    assert first.strip()
    assert stderr == ""


@pytest.mark.parametrize(
    ("command", "closed", "code"),
    [
        (("--version",), "1", 0),
        (("status",), "1", 0),
        (("status", "--check", "--max-age", "1s"), "1", 1),  # a monitor's check, stale
        (("status", "--check", "--max-age", "1s"), "1 2", 1),
        (("status", "--stack", "nothing"), "1", 2),
        (("events", "--json"), "1", 0),  # the event loop's path
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_a_closed_stdout_or_stderr_drops_the_output_and_keeps_the_status(
    config: Path, command: tuple[str, ...], closed: str, code: int
) -> None:
    """`mirrorsync status --check >&-` (a check whose runner closed stdout, or both
    streams): what would be printed is dropped, the exit status is the command's,
    never a traceback (Python makes a closed stream None)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    closes = " ".join(f"{fd}>&-" for fd in closed.split())
    done = subprocess.run(
        f"exec {sys.executable} -m mirrorsync -c {config} {' '.join(command)} {closes}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        timeout=60,
    )
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    if code == 2 and closed == "1":
        assert done.stderr.startswith("mirrorsync: error: no stack"), done.stderr


def test_head_in_a_shell_pipeline_prints_one_line_and_nothing_else(config: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        f"set -o pipefail; {sys.executable} -m mirrorsync -c {config} events --json | head -1",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["id"] == 1


# -- 2. limits and dates -----------------------------------------------------------


@pytest.mark.parametrize("limit", ["-5", "0", "many"])
def test_a_limit_below_one_is_a_usage_error(config: Path, limit: str) -> None:
    done = cli(config, "events", "--limit", limit)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("mirrorsync events: error: argument --limit: expected")


@pytest.mark.parametrize(
    "when",
    ["2026-13-45", "2026-02-30", "2026-11-20T25:00", "last week", "2026-11-20T08:00+25:00"],
)
def test_impossible_dates_are_refused_in_one_line(config: Path, when: str) -> None:
    for args in (
        ("diff", *RELEASE, when, "2"),
        ("at", *RELEASE, when),
        ("events", "--since", when),
    ):
        done = cli(config, *args)
        assert done.returncode == 2, (args, done.stdout)
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert repr(when) in done.stderr and "date" in done.stderr


@pytest.mark.parametrize(
    ("when", "version"),
    [
        ("2026-11-19", 0),  # end of a day before the first version
        ("2026-11-20", 1),  # a bare date: the end of that day, UTC
        ("2026-11-21T07:59:59Z", 1),
        ("2026-11-21T08:00Z", 2),
        ("2026-11-21T10:00+02:00", 2),  # 08:00 UTC
        ("2026-11-21T09:59:59+02:00", 1),
        ("2026-11-21T20:16:00-05:00", 2),  # 2026-11-22 01:16 UTC, before version 3
        ("2026-11-22T03:00:00-05:00", 3),  # 08:00 UTC
        ("2026-11-22 08:00:00.000000Z", 3),
        ("3", 3),
    ],
)
def test_iso_8601_dates_and_times_with_offsets(config: Path, when: str, version: int) -> None:
    done = cli(config, "at", *RELEASE, when, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["version"] == version


# -- 3. exit codes -------------------------------------------------------------------


def test_exit_codes_no_database_no_stack_unknown_hash(tmp_path: Path, config: Path) -> None:
    missing = write_config(tmp_path, tmp_path / "never.db", "missing.yaml")
    for args in (
        ("status",),
        ("events",),
        ("history", *RELEASE),
        ("show", "a" * 32),
        ("verify",),
        ("export", "pages", "--release", "develop", "--out", "site"),
    ):
        done = run_cli("-c", str(missing), *args, cwd=tmp_path)
        assert done.returncode == 66, (args, done.stderr)
        assert done.stderr.strip() == (
            f"mirrorsync: error: no database yet at {tmp_path / 'never.db'};"
            " run 'mirrorsync once' first"
        )
    assert not (tmp_path / "never.db").exists()
    no_stack = cli(config, "history", "--release", "develop", "--stack", "nope")
    assert no_stack.returncode == 2 and "no stack develop/nope" in no_stack.stderr
    assert cli(config, "status", "--stack", "nope").returncode == 2


@pytest.mark.parametrize("url", ["mysql://u:secret@db.example.org/mirrorsync", "mysql://h/x"])
def test_a_database_url_that_is_not_sqlite_is_a_configuration_error(
    tmp_path: Path, url: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"database: '{url}'\nsources: [{{name: a, kind: catalog}}]\n")
    done = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert done.returncode == 2
    scheme = url.split(":")[0]
    assert done.stderr.startswith(f"mirrorsync: error: {config}: database: {scheme}:// databases")
    assert "not supported" in done.stderr and "secret" not in done.stderr
    assert list(tmp_path.iterdir()) == [config]  # no directory named 'mysql:'


def test_a_postgresql_url_is_a_server_never_a_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    url = "postgresql://u:secret@127.0.0.1:1/mirrorsync"  # nothing listens on port 1
    config.write_text(f"database: '{url}'\nsources: [{{name: a, kind: catalog}}]\n")
    done = run_cli("-c", str(config), "status", cwd=tmp_path)
    assert done.returncode == 69, done.stderr
    assert done.stderr.startswith(
        "mirrorsync: error: postgresql://***@127.0.0.1:1/mirrorsync: database server unavailable"
    )
    assert "secret" not in done.stderr
    assert list(tmp_path.iterdir()) == [config]  # no directory named 'postgresql:'


def test_a_sqlite_url_names_the_file(tmp_path: Path, history_db: Path) -> None:
    config = write_config(tmp_path, f"sqlite://{history_db}")
    done = run_cli("-c", str(config), "status", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert {s["stack"] for s in json.loads(done.stdout)} == {"root", "e4s"}


# -- 4. human formats ------------------------------------------------------------------


def test_status_fits_80_columns_with_readable_times(config: Path) -> None:
    done = cli(config, "status")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("2 stacks hold 3015 distinct specs in "), lines[0]
    assert all(len(line) <= 80 for line in lines[1:]), lines
    root = next(line for line in lines if line.startswith("develop/root"))
    assert re.fullmatch(r"develop/root\s+3\s+3000\s+\S+ ago\s+\S+ ago\s+ok", root), root
    assert ".000000" not in done.stdout  # full precision is for --json


def test_times_in_tables_are_to_the_minute_and_full_in_json(config: Path) -> None:
    human = cli(config, "history", *RELEASE)
    assert human.returncode == 0, human.stderr
    assert "2026-11-21 08:00Z" in human.stdout and "T08:00" not in human.stdout
    machine = json.loads(cli(config, "history", *RELEASE, "--json").stdout)
    assert [v["created_at"] for v in machine] == [
        "2026-11-20T08:00:00.000000Z",
        "2026-11-21T08:00:00.000000Z",
        "2026-11-22T08:00:00.000000Z",
    ]


def test_counts_are_singular_for_one(tmp_path: Path) -> None:
    db = tmp_path / "one.db"
    build_history(db, stacks={("develop", "root"): 1})
    config = write_config(tmp_path, db)
    status = cli(config, "status")
    assert status.stdout.splitlines()[0].startswith("1 stack holds 1 distinct spec in ")
    at = cli(config, "at", *RELEASE, "1")
    assert at.stdout.splitlines()[0] == "develop/root at v1: 1 spec"


# -- 6. queries --------------------------------------------------------------------------


def test_events_filters(config: Path) -> None:
    def ids(*args: str) -> list[int]:
        done = cli(config, "events", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [e["id"] for e in json_lines(done.stdout)]

    every = json_lines(cli(config, "events", "--json").stdout)
    assert len(every) == 2 * 1 + 3 * 1000 + 3 * 5  # stack.added x2, then spec.added
    assert ids("--limit", "3") == [1, 2, 3]
    newest = ids("--reverse", "--limit", "2")
    assert newest == [every[-1]["id"], every[-2]["id"]]
    e4s = json_lines(cli(config, "events", "--json", "--stack", "e4s").stdout)
    assert len(e4s) == 1 + 15 and {e["stack"] for e in e4s} == {"e4s"}
    assert cli(config, "events", "--release", "v1.0").returncode == 2  # matches no release
    package = "developroot-3"  # generated_spec names packages "<release><stack>-<i % 97>"
    by_package = json_lines(cli(config, "events", "--json", "--package", package).stdout)
    assert by_package and {e["name"] for e in by_package} == {package}
    assert len(by_package) == sum(1 for e in every if e["name"] == package)
    day2 = json_lines(
        cli(config, "events", "--json", "--since", "2026-11-21", "--until", "2026-11-21").stdout
    )
    assert {e["occurred_at"][:10] for e in day2} == {"2026-11-21"} and len(day2) == 1005
    above = ids("--since", "3000", "--type", "spec.added")
    assert above == [e["id"] for e in every if e["id"] > 3000 and e["type"] == "spec.added"]


def test_history_limit_shows_the_newest(config: Path) -> None:
    rows = json.loads(cli(config, "history", *RELEASE, "--limit", "2", "--json").stdout)
    assert [r["version"] for r in rows] == [2, 3]


def test_status_filters(config: Path) -> None:
    rows = json.loads(cli(config, "status", "--stack", "e4s", "--json").stdout)
    assert [(r["release"], r["stack"], r["spec_count"]) for r in rows] == [("develop", "e4s", 15)]
    assert set(rows[0]) >= {"last_checked_at", "last_changed_at", "spec_count", "last_error"}


def test_status_check(tmp_path: Path, config: Path) -> None:
    recent = cli(config, "status", "--check")
    assert recent.returncode == 0 and recent.stdout == ""
    old = cli(config, "status", "--check", "--max-age", "3d")
    assert old.returncode == 1
    assert sorted(old.stdout.splitlines())[0].startswith("test:develop/e4s: last checked ")
    assert len(old.stdout.splitlines()) == 2
    problems = json_lines(cli(config, "status", "--check", "--max-age", "3d", "--json").stdout)
    assert {p["stack"] for p in problems} == {"root", "e4s"}
    assert cli(config, "status", "--check", "--max-age", "soon").returncode == 2
    never = write_config(tmp_path, tmp_path / "none.db", "never.yaml")
    nothing = run_cli("-c", str(never), "status", "--check", cwd=tmp_path)
    assert nothing.returncode == 1 and "no database yet" in nothing.stdout


def test_show_accepts_a_prefix_and_spacks_slash_form(config: Path) -> None:
    spec = generated_spec(7, "developroot")
    for form in (spec.hash, spec.hash[:7], f"/{spec.hash[:10]}"):
        done = cli(config, "show", form, "--json")
        assert done.returncode == 0, (form, done.stderr)
        assert json.loads(done.stdout)["spec"]["hash"] == spec.hash
    short = cli(config, "show", spec.hash[:6])
    assert short.returncode == 2 and "prefix" in short.stderr


def test_an_ambiguous_prefix_lists_the_candidates(tmp_path: Path) -> None:
    db = tmp_path / "twins.db"
    build_history(db, stacks={("develop", "root"): 1})
    twins = ["abcdefg" + c * 25 for c in "xy"]

    async def add() -> None:
        async with await Store.open(db) as store:
            stack = await writes.ensure_stack(store, 1, "develop", "root")
            added = [
                SpecInfo(h, "twin", f"{i}.0", "linux", "ubuntu22.04", "x86_64", None, ())
                for i, h in enumerate(twins)
            ]
            snapshot = writes.Snapshot(stack.id, None, None, added, ())
            await writes.commit_snapshot(store, snapshot, "2026-11-23T00:00:00.000000Z")

    anyio.run(add)
    config = write_config(tmp_path, db)
    done = cli(config, "show", "abcdefg")
    assert done.returncode == 2
    assert "abcdefg is ambiguous" in done.stderr
    assert all(f"{h} (twin@" in done.stderr for h in twins)
    assert cli(config, "show", "abcdefgx").returncode == 0


# -- 7. streaming ------------------------------------------------------------------------


#: Runs the CLI and, as it exits, writes its own peak RSS (VmHWM, KiB) to argv[1].
#: The child's own figure: ru_maxrss from wait4 would include the RSS of the pytest
#: process it was forked from (Linux carries the old hiwater mark across exec).
_MEASURED = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def peak():
    with open("/proc/self/status") as status:
        kib = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kib)
atexit.register(peak)
sys.argv[0] = "mirrorsync"
runpy.run_module("mirrorsync", run_name="__main__")
"""


def _peak_rss_kib(config: Path, *args: str) -> int:
    """Peak RSS of one CLI process printing to a pipe that is read to the end."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.pop("MIRRORSYNC_CONFIG", None)
    report = config.parent / "peak.kib"
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEASURED, str(report), "-c", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=config.parent,
    )
    assert proc.stdout is not None
    lines = sum(1 for _ in proc.stdout)
    assert proc.wait(timeout=300) == 0 and lines > 0
    return int(report.read_text())


def test_memory_does_not_grow_with_the_rows_printed(tmp_path: Path) -> None:
    """10,000 and 100,000 rows cost the same memory, as tables and as JSON."""
    peaks: dict[int, dict[str, int]] = {}
    for n in (10_000, 100_000):
        db = tmp_path / f"{n}.db"
        build_history(db, stacks={("develop", "root"): n})
        config = write_config(tmp_path, db, f"{n}.yaml")
        peaks[n] = {
            " ".join(args): _peak_rss_kib(config, *args)
            for args in (
                ("events",),
                ("at", *RELEASE, "1", "--json"),
                ("specs", *RELEASE),
            )
        }
    for command, small in peaks[10_000].items():
        big = peaks[100_000][command]
        # 90,000 more rows held in memory would be some 30 MB or more.
        assert big - small < 8 * 1024, (command, small, big)


# -- 6. what the crawler recorded -----------------------------------------------------------


def test_specs_and_show_list_sizes_checksums_and_manifest_status(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    infos = build_from_seed(docroot, "001")["develop"]
    config = tmp_path / "synced.yaml"
    config.write_text(catalog_config_text(tmp_path, server))
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0

    listed = cli(config, "specs", "--release", "develop", "--stack", "e4s", "--json")
    assert listed.returncode == 0, listed.stderr
    records = json_lines(listed.stdout)
    assert len(records) == len(infos["e4s"].spec_files) == 20
    assert {r["manifest_status"] for r in records} == {"ok"}
    assert all(
        r["tarball_size"] > 0 and r["tarball_checksum"].startswith("sha256:") for r in records
    )
    assert [(r["name"], r["version"]) for r in records] == sorted(
        (r["name"], r["version"]) for r in records
    )
    first = records[0]
    only = json_lines(
        cli(
            config,
            "specs",
            "--release",
            "develop",
            "--stack",
            "e4s",
            "--package",
            first["name"],
            "--json",
        ).stdout
    )
    assert only and {r["name"] for r in only} == {first["name"]}

    human = cli(config, "specs", "--release", "develop", "--stack", "e4s")
    row = next(line for line in human.stdout.splitlines() if line.startswith(first["hash"]))
    assert re.search(r"\s\d+(\.\d)? (B|kB|MB)\s+ok\s+sha256:", row), row

    shown = cli(config, "show", first["hash"][:8], "--json")
    manifests = json.loads(shown.stdout)["manifests"]
    assert {(m["stack"], m["tarball_size"]) for m in manifests} >= {("e4s", first["tarball_size"])}
    assert "ok" in cli(config, "show", first["hash"]).stdout


# -- 10. progress off a terminal ---------------------------------------------------------------


def test_a_long_run_off_a_terminal_logs_progress_lines(
    tmp_path: Path, docroot: Path, server: FixtureServer
) -> None:
    build_from_seed(docroot, "000")
    server.add_fault("*.spec.manifest.json", "delay", delay=0.05, times=None)  # a slow crawl
    config = tmp_path / "slow.yaml"
    config.write_text(catalog_config_text(tmp_path, server))
    done = run_cli("-c", str(config), "once", "--progress-every", "0.5", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "progress: " in line]
    assert lines, done.stderr

    # Each phase with done/total, its rate and the time it has left; then the run's figures.
    def phase(name: str) -> str:
        return (
            rf"{name} (?P<{name}_done>\d+)/(?P<{name}_total>\d+) \(\d+(\.\d)?/s, "
            r"(done|(\?|[\d.]+(ms|s)|\d+m\d\ds) left)\)"
        )

    line_re = re.compile(
        rf"INFO mirrorsync\.progress: progress: {phase('indexes')}(, {phase('manifests')})?, "
        r"\d+ requests?, [\d.]+ (B|kB|MB) \([\d.]+ (B|kB|MB)/s\), [\d.ms]+ elapsed"
    )
    matches = [line_re.fullmatch(line) for line in lines]
    assert all(matches), lines
    # The crawl is never silent: lines keep coming while it goes, its count rising.
    crawl = [
        (int(m["manifests_done"]), int(m["manifests_total"]))
        for m in matches
        if m and m["manifests_done"]
    ]
    assert len({done for done, _ in crawl}) >= 2, lines
    assert all(done <= total for done, total in crawl), lines
    quiet = run_cli("-c", str(config), "once", "--progress-every", "0", cwd=tmp_path, timeout=300)
    assert quiet.returncode == 0 and "progress: " not in quiet.stderr
