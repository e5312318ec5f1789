"""Query filters as a person types them: globs, vN versions, relative times, durations.

Every test runs ``python -m mirrorsync`` as a real process against a real SQLite
history written through the store's own functions (``bigdb``): develop/root and
develop/e4s, three versions each, on 2026-11-20, 21 and 22 at 08:00Z.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bigdb import build_history
from conftest import catalog_config_text, json_lines, run_cli, write_config
from mirrorsync.fixture.build import build_from_seed
from mirrorsync.fixture.server import FixtureServer

ROOT = ("--release", "develop", "--stack", "root")


@pytest.fixture(scope="module")
def history_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("filters") / "state.db"
    build_history(path, stacks={("develop", "root"): 200, ("develop", "e4s"): 5}, versions=3)
    return path


@pytest.fixture
def config(tmp_path: Path, history_db: Path) -> Path:
    path = tmp_path / "mirrorsync.yaml"
    path.write_text(
        f"database: {history_db}\nsources: [{{name: test, kind: catalog, manifests: none}}]\n"
    )
    return path


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-c", str(config), *args, cwd=config.parent)


def ok(config: Path, *args: str) -> str:
    done = cli(config, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


# -- 1. every name filter is a glob -------------------------------------------------


def test_package_filters_are_globs(config: Path) -> None:
    glob = "developroot-1*"  # bigdb names packages "<release><stack>-<i % 97>"
    specs = json_lines(ok(config, "specs", *ROOT, "--package", glob, "--json"))
    assert specs and all(fnmatch.fnmatchcase(s["name"], glob) for s in specs)
    assert {s["name"] for s in specs} > {"developroot-1", "developroot-10"}
    events = json_lines(ok(config, "events", "--package", glob, "--json"))
    assert events and all(fnmatch.fnmatchcase(e["name"], glob) for e in events)
    every = json_lines(ok(config, "events", "--json"))
    assert len(events) == sum(1 for e in every if fnmatch.fnmatchcase(e["name"] or "", glob))
    # fnmatch's set negation, as in the configuration
    negated = json_lines(ok(config, "specs", *ROOT, "--package", "developroot-[!1]", "--json"))
    assert {s["name"] for s in negated} == {f"developroot-{i}" for i in (0, *range(2, 10))}


def test_stack_release_and_source_filters_are_globs(config: Path) -> None:
    rows = json.loads(ok(config, "status", "--stack", "e*", "--json"))
    assert [(r["release"], r["stack"]) for r in rows] == [("develop", "e4s")]
    rows = json.loads(ok(config, "status", "--release", "dev*", "--json"))
    assert [r["stack"] for r in rows] == ["e4s", "root"]
    e4s = json_lines(ok(config, "events", "--stack", "e?s", "--source", "t*", "--json"))
    assert len(e4s) == 1 + 15 and {e["stack"] for e in e4s} == {"e4s"}
    assert len(json_lines(ok(config, "events", "--release", "d*", "--json"))) == 2 + 600 + 15
    # a glob naming one stack answers as its name does
    by_glob = ok(config, "history", "--release", "dev*", "--stack", "r??t", "--source", "te*")
    assert by_glob == ok(config, "history", *ROOT)
    assert ok(config, "at", "--release", "*", "--stack", "r*", "v1") == ok(config, "at", *ROOT, "1")
    assert json.loads(ok(config, "at", "--release", "*", "--stack", "e*", "2", "--json")) == (
        json.loads(ok(config, "at", "--release", "develop", "--stack", "e4s", "2", "--json"))
    )


def test_a_glob_naming_several_stacks_names_them(config: Path) -> None:
    done = cli(config, "history", "--release", "develop", "--stack", "*")
    assert done.returncode == 2 and done.stdout == ""
    assert "matches several stacks (test:develop/e4s, test:develop/root)" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("specs", *ROOT, "--package", "nosuchpkg"), "--package nosuchpkg matches no package"),
        (("specs", *ROOT, "--package", "zz*"), "--package zz* matches no package"),
        (("events", "--package", "nosuchpkg"), "--package nosuchpkg matches no package"),
        (("events", "--source", "nosuch"), "--source nosuch matches no source"),
        (("events", "--release", "v1.0"), "--release v1.0 matches no release"),
        (("events", "--stack", "x*"), "--stack x* matches no stack"),
        (("status", "--stack", "x*"), "no stack */x*"),
        (("history", "--release", "develop", "--stack", "x*"), "no stack develop/x*"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else "",
)
def test_a_name_that_matches_nothing_is_a_usage_error_naming_it(
    config: Path, args: tuple[str, ...], message: str
) -> None:
    done = cli(config, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and message in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr


# -- 2. versions as they are printed -------------------------------------------------


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["table", "json"])
def test_vN_answers_exactly_what_N_does(config: Path, json_flag: tuple[str, ...]) -> None:
    assert ok(config, "diff", *ROOT, "v1", "v2", *json_flag) == ok(
        config, "diff", *ROOT, "1", "2", *json_flag
    )
    assert ok(config, "at", *ROOT, "v1", *json_flag) == ok(config, "at", *ROOT, "1", *json_flag)


def test_versions_are_printed_the_way_they_are_accepted(config: Path) -> None:
    assert ok(config, "diff", *ROOT, "v1", "v2").splitlines()[0] == "develop/root v1 -> v2: +200 -0"
    assert ok(config, "at", *ROOT, "v1").splitlines()[0] == "develop/root at v1: 200 specs"
    too_far = cli(config, "at", *ROOT, "v9")
    assert too_far.returncode == 2 and "version 9 does not exist" in too_far.stderr


# -- 3. before the history begins ------------------------------------------------------


def test_a_date_before_the_history_says_when_it_starts(config: Path) -> None:
    first = ok(config, "diff", *ROOT, "2026-11-01", "2026-11-02").splitlines()[0]
    assert first == ("develop/root v0 -> v0: +0 -0 (the history starts at 2026-11-20 08:00Z)")
    at = ok(config, "at", *ROOT, "2026-11-19").splitlines()[0]
    assert at == "develop/root at v0: 0 specs (the history starts at 2026-11-20 08:00Z)"
    # asked for version 0 itself, or a date inside the history: no note
    assert "history starts" not in ok(config, "diff", *ROOT, "0", "1")
    assert "history starts" not in ok(config, "at", *ROOT, "2026-11-21")


# -- 4. relative times ---------------------------------------------------------------


def _days_since(day: str) -> int:
    return (datetime.now(UTC).date() - datetime.fromisoformat(day).date()).days


def test_relative_times_wherever_dates_are_taken(config: Path) -> None:
    every = json_lines(ok(config, "events", "--json"))
    # The history is in the past: nothing in the last 2 hours, everything in the last
    # (days since its start + 1) days.
    assert json_lines(ok(config, "events", "--since", "2h", "--json")) == []
    whole = _days_since("2026-11-20") + 1
    assert json_lines(ok(config, "events", "--since", f"{whole}d", "--json")) == every
    assert json_lines(ok(config, "events", "--until", "2h", "--json")) == every
    assert ok(config, "events", "--since", "yesterday", "--until", "today", "--json") == ""
    # diff and at too: "2h" is after the last version, a day before the start is before it
    before = f"{whole + 1}d"
    assert json.loads(ok(config, "at", *ROOT, "2h", "--json"))["version"] == 3
    assert json.loads(ok(config, "at", *ROOT, "yesterday", "--json"))["version"] == 3
    assert json.loads(ok(config, "at", *ROOT, before, "--json"))["version"] == 0
    diff = json.loads(ok(config, "diff", *ROOT, before, "2h", "--json"))
    assert (diff["from_version"], diff["to_version"]) == (0, 3)
    # a bare integer stays an event id
    assert [e["id"] for e in json_lines(ok(config, "events", "--since", "600", "--json"))] == [
        e["id"] for e in every if e["id"] > 600
    ]


def test_yesterday_is_yesterdays_utc_date(config: Path, tmp_path: Path) -> None:
    from mirrorsync.store.instants import instant

    now = datetime(2026, 11, 22, 0, 30, tzinfo=UTC)
    assert instant("yesterday", end_of_day=False, now=now) == "2026-11-21T00:00:00.000000Z"
    assert instant("yesterday", end_of_day=True, now=now) == "2026-11-21T23:59:59.999999Z"
    assert instant("2h", now=now) == "2026-11-21T22:30:00.000000Z"
    assert instant("90m", now=now) == (now - timedelta(minutes=90)).strftime(
        "%Y-%m-%dT%H:%M:%S.000000Z"
    )


# -- 5. durations for --wait and --progress-every --------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("mirror", "--wait", "1h"),
        ("webhooks", "retry", "--wait", "90s"),
        ("once", "--wait", "1h", "--progress-every", "1m", "--source", "nosuch"),
    ],
    ids=lambda a: " ".join(a),
)
def test_wait_and_progress_every_take_the_duration_syntax(
    config: Path, args: tuple[str, ...]
) -> None:
    done = cli(config, *args)
    assert "argument --" not in done.stderr, done.stderr  # the value was accepted


@pytest.mark.parametrize(
    "args",
    [
        ("mirror", "--wait", "-5"),
        ("once", "--wait", "-5"),
        ("once", "--progress-every", "-1m"),
        ("once", "--wait", "nan"),
        ("once", "--wait", "400d"),
    ],
    ids=lambda a: " ".join(a),
)
def test_a_negative_or_impossible_wait_is_refused(config: Path, args: tuple[str, ...]) -> None:
    done = cli(config, *args)
    assert done.returncode == 2 and f"argument {args[1]}" in done.stderr, done.stderr


def test_verify_filters_are_globs(tmp_path: Path, docroot: Path, server: FixtureServer) -> None:
    stacks = build_from_seed(docroot, "001")["develop"]
    config = write_config(
        tmp_path / "c.yaml", catalog_config_text(tmp_path, server, extra="    manifests: none")
    )
    assert run_cli("-c", str(config), "once", cwd=tmp_path).returncode == 0
    by_glob = run_cli(
        "-c", str(config), "verify", "--stack", "e4?", "--release", "dev*", cwd=tmp_path
    )
    assert by_glob.returncode == 0, by_glob.stderr
    count = len(stacks["e4s"].spec_files)
    assert f"verify: {count} specs in 1 stack, 0 problems" in by_glob.stderr
    nothing = run_cli("-c", str(config), "verify", "--stack", "zz*", cwd=tmp_path)
    assert nothing.returncode == 2 and "--stack zz*" in nothing.stderr
