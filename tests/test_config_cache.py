"""status's cache of the compiled configuration (mirrorsync.config_cache, issue 31).

A hit is the very view a full load gives (equal objects); any change to what the
validation read (the file, the environment variables it names, a real path, a key
file, the file's mode) is a miss, after which the full load says what it says; a
damaged, foreign or unwritable cache is never an error, only a miss.
"""

from __future__ import annotations

import marshal
import os
import shutil
import sys
from pathlib import Path

import pytest

import mirrorsync.config
import mirrorsync.config_cache
from conftest import run_cli
from mirrorsync.config import load_config
from mirrorsync.config_cache import StatusConfig, _key, load_status_config
from mirrorsync.errors import ConfigError
from mirrorsync.usercache import cache_directory

CONFIG = """\
sources:
  - {name: cat, kind: catalog, url: 'http://127.0.0.1:9/c.json', manifests: all}
  - {name: mir, kind: mirror, url: 'file:///nonexistent/mirror', manifests: none}
  - {name: pages, kind: pages, urls: ['http://127.0.0.1:9/p']}
database: ${MS_TEST_DIR}/ms.db
mirrors:
  - {name: local, path: '$MS_TEST_DIR/copy', source: cat, release: develop}
  - {name: remote, path: 's3://bucket/copy', source: cat, release: develop}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache directory of the test's own; ``MS_TEST_DIR`` (named by CONFIG) set."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("MS_TEST_DIR", str(tmp_path))
    monkeypatch.delenv("MIRRORSYNC_NO_CACHE", raising=False)
    return tmp_path / "cache" / "mirrorsync"


def full_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the full loads (``parse_config``) that load_status_config runs."""
    calls: list[str] = []
    real = mirrorsync.config.parse_config

    def counted(text: str, path: str = "<config>") -> mirrorsync.config.Config:
        calls.append(path)
        return real(text, path)

    monkeypatch.setattr(mirrorsync.config, "parse_config", counted)
    return calls


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("status-*")) if cache.exists() else []


def test_a_hit_is_what_the_full_load_gives(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    loads = full_loads(monkeypatch)
    first = load_status_config(str(path))
    assert loads == [str(path)] and len(entries(cache)) == 1
    second = load_status_config(str(path))
    assert loads == [str(path)]  # a hit: no full load
    fresh = StatusConfig.of(load_config(str(path)))
    assert first == second == fresh
    assert second.database_path == str(tmp_path / "ms.db")  # text: status makes no Path
    assert [(s.name, s.manifest_policy) for s in second.sources] == [
        ("cat", "all"),
        ("mir", "none"),
        ("pages", "none"),
    ]
    assert [(m.name, m.is_directory) for m in second.mirrors] == [
        ("local", True),
        ("remote", False),
    ]
    (entry,) = entries(cache)
    assert entry.stat().st_mode & 0o777 == 0o600
    assert cache.stat().st_mode & 0o777 == 0o700


def test_every_change_misses(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The text, a variable it names, HOME, the working directory of a relative copy
    (its real path), a key file: each change is a full load, whose answer is used."""
    path = tmp_path / "c.yaml"
    key = tmp_path / "key.asc"
    key.write_text("a key\n")
    copy = tmp_path / "copies" / "one"
    copy.mkdir(parents=True)
    text = CONFIG.replace(
        "manifests: all}", f"manifests: all, verify_signatures: true, trusted_keys: ['{key}']}}"
    )
    text = text.replace("'$MS_TEST_DIR/copy'", "copies/one")  # relative: the real path counts
    path.write_text(text)
    loads = full_loads(monkeypatch)
    monkeypatch.chdir(tmp_path)
    load_status_config(str(path))
    load_status_config(str(path))
    assert len(loads) == 1

    def misses() -> int:
        before = len(loads)
        view = load_status_config(str(path))
        missed = len(loads) - before
        assert view == StatusConfig.of(load_config(str(path)))
        return missed

    path.write_text(text + "# a comment\n")
    assert misses() == 1
    assert misses() == 0
    monkeypatch.setenv("MS_TEST_DIR", str(tmp_path / "elsewhere"))  # named by the file
    assert misses() == 1
    assert misses() == 0
    monkeypatch.setenv("UNRELATED_VARIABLE", "x")  # not named: a hit
    assert misses() == 0
    monkeypatch.setenv("HOME", str(tmp_path))
    assert misses() == 1
    (tmp_path / "copies" / "one").rmdir()
    (tmp_path / "copies" / "one").symlink_to(tmp_path)  # the copy's real path changes
    assert misses() == 1
    assert misses() == 0
    key.unlink()  # the full load refuses it now, and a hit must not hide that
    with pytest.raises(ConfigError, match="no such file"):
        load_status_config(str(path))


def test_an_edit_to_the_configuration_code_misses(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key stamps every module of the configuration's code, the ``config``
    package's too: an edit to one of them (in a checkout) is a full load."""
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    real = Path(mirrorsync.config_cache.__file__).parent
    key = _key(str(path), CONFIG)
    assert key is not None
    stamps = key["code"]
    assert isinstance(stamps, list)
    stamped = {name for name, _, _ in stamps}
    for module in [*real.glob("config*.py"), *(real / "config").glob("*.py")]:
        assert str(module.relative_to(real)) in stamped
    code = tmp_path / "code"  # a checkout's package, where an edit can be made
    (code / "config").mkdir(parents=True)
    (code / "config_cache.py").write_text("# the cache\n")
    moved = code / "config" / "checks.py"
    moved.write_text("# a check\n")
    monkeypatch.setattr(mirrorsync.config_cache, "__file__", str(code / "config_cache.py"))
    loads = full_loads(monkeypatch)
    load_status_config(str(path))
    load_status_config(str(path))
    assert len(loads) == 1
    moved.write_text("# a check, edited\n")
    load_status_config(str(path))
    assert len(loads) == 2
    load_status_config(str(path))
    assert len(loads) == 2


def test_a_package_installed_or_upgraded_on_the_import_path_misses(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What validates the configuration is also PyYAML's and msgspec's code: an upgrade
    of either (pip removes the package's directory and writes it anew) is a full load,
    as an edit of mirrorsync's own code is; another directory on the path is not."""
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    site = tmp_path / "site-packages"  # where msgspec is found first, from now on
    (site / "msgspec").mkdir(parents=True)
    (site / "msgspec" / "__init__.py").write_text("# 0.18.6\n")
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    loads = full_loads(monkeypatch)
    load_status_config(str(path))
    load_status_config(str(path))
    assert len(loads) == 1
    monkeypatch.setattr(sys, "path", [*sys.path, str(tmp_path / "elsewhere")])
    load_status_config(str(path))
    assert len(loads) == 1
    shutil.rmtree(site / "msgspec")  # an upgrade, as pip does it
    (site / "msgspec").mkdir()
    (site / "msgspec" / "__init__.py").write_text("# 0.19.0\n")
    load_status_config(str(path))
    assert len(loads) == 2
    load_status_config(str(path))
    assert len(loads) == 2


def test_an_inline_secret_is_checked_against_the_files_mode_again(
    tmp_path: Path, cache: Path
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        CONFIG + "webhooks:\n  - {name: w, url: 'http://127.0.0.1:9/h', secret: whsec_abc}\n"
    )
    path.chmod(0o600)
    load_status_config(str(path))
    assert len(entries(cache)) == 1
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_status_config(str(path))


def test_a_configuration_that_reads_lockfiles_is_not_cached(tmp_path: Path, cache: Path) -> None:
    keeplist = tmp_path / "keep.txt"
    keeplist.write_text("a" * 32 + "\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        CONFIG.replace("release: develop}", f"release: develop, hashes: {keeplist}}}", 1)
    )
    view = load_status_config(str(path))
    assert view == StatusConfig.of(load_config(str(path)))
    assert entries(cache) == []


def test_postgresql_and_no_cache_write_nothing(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("${MS_TEST_DIR}/ms.db", "postgresql://u@127.0.0.1:9/db"))
    assert str(load_status_config(str(path)).database_path) == "postgresql://***@127.0.0.1:9/db"
    assert entries(cache) == []
    path.write_text(CONFIG)
    monkeypatch.setenv("MIRRORSYNC_NO_CACHE", "1")
    load_status_config(str(path))
    assert entries(cache) == []


@pytest.mark.parametrize(
    "damage", ["garbage", "truncated", "wrong types", "group-writable", "symlink"]
)
def test_a_damaged_or_foreign_entry_is_a_miss(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    load_status_config(str(path))
    (entry,) = entries(cache)
    good = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\x00\xff not json")
    elif damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "wrong types":
        data = marshal.loads(good)
        data["config"]["mirrors"] = [["local", "yes"]]
        entry.write_bytes(marshal.dumps(data))
    elif damage == "group-writable":
        entry.chmod(0o664)
    else:
        planted = tmp_path / "planted.json"
        planted.write_bytes(good)
        entry.unlink()
        entry.symlink_to(planted)
    loads = full_loads(monkeypatch)
    view = load_status_config(str(path))
    assert len(loads) == 1  # a miss
    assert view == StatusConfig.of(load_config(str(path)))


def test_status_with_an_unwritable_or_damaged_cache_says_the_same(tmp_path: Path) -> None:
    """The CLI: no traceback, the same output and exit status, whatever the cache."""
    (tmp_path / "c.yaml").write_text(CONFIG)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    outputs = []  # below a file: no directory can be made there (even by root)
    for where in (tmp_path / "fresh", tmp_path / "fresh", blocker, blocker / "below"):
        done = run_cli(
            "-c",
            "c.yaml",
            "status",
            cwd=tmp_path,
            env={"XDG_CACHE_HOME": str(where), "MS_TEST_DIR": str(tmp_path)},
        )
        outputs.append((done.returncode, done.stdout, done.stderr))
    assert all(o == outputs[0] for o in outputs), outputs
    assert outputs[0][0] == 66 and "no database yet" in outputs[0][2]
    assert len(list((tmp_path / "fresh" / "mirrorsync").iterdir())) == 1
    (entry,) = (tmp_path / "fresh" / "mirrorsync").iterdir()
    entry.write_bytes(entry.read_bytes()[:-3])  # truncated
    done = run_cli(
        "-c",
        "c.yaml",
        "status",
        cwd=tmp_path,
        env={"XDG_CACHE_HOME": str(tmp_path / "fresh"), "MS_TEST_DIR": str(tmp_path)},
    )
    assert (done.returncode, done.stdout, done.stderr) == outputs[0]


def test_a_cache_directory_others_may_write_is_not_written(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directory the cache's files go in must be this user's own, as each file is:
    one others may write (or a link to one) is left alone, and every status loads in
    full."""
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG)
    cache.mkdir(parents=True)
    cache.chmod(0o777)
    loads = full_loads(monkeypatch)
    load_status_config(str(path))
    load_status_config(str(path))
    assert len(loads) == 2 and entries(cache) == []
    cache.chmod(0o700)
    load_status_config(str(path))
    load_status_config(str(path))
    assert len(loads) == 3 and len(entries(cache)) == 1


def test_the_cache_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    assert cache_directory() == "/x/cache/mirrorsync"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # the XDG spec: ignored
    monkeypatch.setenv("HOME", "/home/u")
    assert cache_directory() == "/home/u/.cache/mirrorsync"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv("HOME")
    assert cache_directory() is None
    assert os.environ.get("HOME") is None
