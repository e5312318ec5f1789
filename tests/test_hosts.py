"""One slow or dead host never stalls the others beyond its own timeouts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from conftest import sync
from mirrorsync.config import HttpConfig, RetryConfig, parse_config
from mirrorsync.errors import FetchError
from mirrorsync.fetch import Fetched, HttpClient, origin
from mirrorsync.fixture.build import CATALOG_NAME, build_catalog_from_specs
from mirrorsync.fixture.server import FixtureServer
from mirrorsync.fixture.specs import fake_hash, spec_node
from mirrorsync.redact import Url

TIMEOUT = 1.0


def nodes(prefix: str, n: int) -> list[dict[str, object]]:
    return [spec_node(f"pkg-{prefix}", f"1.{i}", fake_hash(f"{prefix}{i}")) for i in range(n)]


@pytest.mark.parametrize("kind", ["delay", "stall"])
def test_dead_host_does_not_hold_up_the_healthy_one(tmp_path: Path, kind: str) -> None:
    good_root, dead_root = tmp_path / "good", tmp_path / "dead"
    good_root.mkdir()
    dead_root.mkdir()
    dead_stacks = [f"slow{i}" for i in range(4)]
    good_stacks = ["root", "e4s", "ml"]
    build_catalog_from_specs(dead_root, {"develop": {s: nodes(s, 3) for s in dead_stacks}})
    build_catalog_from_specs(good_root, {"develop": {s: nodes(s, 3) for s in good_stacks}})
    # One catalogue on the good host; the dead host's stacks listed first, so
    # they are the first to ask for slots.
    dead_entries = json.loads((dead_root / CATALOG_NAME).read_text())["develop"]
    good_entries = json.loads((good_root / CATALOG_NAME).read_text())["develop"]
    for entry in dead_entries:
        entry["url"] = entry["url"].replace("s3://spack-binaries/", "s3://dead/")
    (good_root / CATALOG_NAME).write_text(json.dumps({"develop": dead_entries + good_entries}))

    with FixtureServer(good_root) as good, FixtureServer(dead_root) as dead:
        assert good.host == dead.host  # two hosts on one machine: only the port differs
        assert origin(good.url) != origin(dead.url)
        dead.add_fault("/*", kind, delay=6, after_bytes=10, times=None)
        config = parse_config(
            f"""
database: {tmp_path / "h.db"}
sources:
  - name: t
    kind: catalog
    url: {good.url}/{CATALOG_NAME}
    bucket_urls: {{spack-binaries: '{good.url}/', dead: '{dead.url}/'}}
http:
  concurrency: 4
  per_host_rate: 1000
  timeout: {TIMEOUT}
  retries: {{attempts: 2, backoff_initial: 0.01, backoff_max: 0.05}}
"""
        )
        report = sync(config)

    by_stack = {o.stack: o for o in report.stacks}
    assert {s: by_stack[s].status for s in good_stacks} == dict.fromkeys(good_stacks, "changed")
    assert {s: by_stack[s].status for s in dead_stacks} == dict.fromkeys(dead_stacks, "failed")
    assert all("timed out" in (by_stack[s].error or "") for s in dead_stacks)
    # Each dead stack spends two timeouts; the healthy ones never wait for them.
    slowest_good = max(by_stack[s].seconds for s in good_stacks)
    fastest_dead = min(by_stack[s].seconds for s in dead_stacks)
    assert fastest_dead >= 2 * TIMEOUT * 0.9
    assert slowest_good < TIMEOUT / 2 < fastest_dead / 4, (slowest_good, fastest_dead)
    assert report.exit_code == 1 and len(report.failures) == len(dead_stacks)


def test_origin_is_scheme_host_and_port() -> None:
    assert origin("https://h/x") == origin("https://h:443/y") == "https://h:443"
    assert origin("http://h:8080/a") != origin("http://h:8081/a")
    assert origin("http://h/a") != origin("https://h/a")


def test_requests_queued_for_a_dead_host_leave_slots_for_others(tmp_path: Path) -> None:
    (tmp_path / "f.json").write_text("{}")
    config = HttpConfig(
        concurrency=4, timeout=TIMEOUT, retries=RetryConfig(attempts=1), per_host_rate=1000
    )
    assert config.host_concurrency == 2  # default: half the global slots
    with FixtureServer(tmp_path) as good, FixtureServer(tmp_path) as dead:
        dead.add_fault("/*", "delay", delay=4, times=None)

        async def main() -> tuple[float, int]:
            failures = 0
            async with HttpClient(config) as client:

                async def doomed() -> None:
                    nonlocal failures
                    try:
                        await client.get(Url(f"{dead.url}/f.json"))
                    except FetchError:
                        failures += 1

                async with anyio.create_task_group() as tg:
                    for _ in range(6):  # more than the global cap
                        tg.start_soon(doomed)
                    await anyio.sleep(0.2)  # they hold or queue for every slot they may
                    started = time.monotonic()
                    fetched = await client.get(Url(f"{good.url}/f.json"))
                    seconds = time.monotonic() - started
                    assert isinstance(fetched, Fetched) and fetched.content == b"{}"
            return seconds, failures

        seconds, failures = anyio.run(main)
    assert failures == 6
    assert seconds < TIMEOUT / 2, seconds  # not one dead-host timeout waited
