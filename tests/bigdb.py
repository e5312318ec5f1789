"""A real SQLite history of any size, written through the store's own functions.

For CLI tests that need many rows (streaming, queries) without a sync: each
version of one stack adds ``per_version`` generated specs, exactly as a sync
would commit them (versions, memberships, events, outbox).
"""

from __future__ import annotations

from pathlib import Path

import anyio

from mirrorsync.fixture.specs import fake_hash
from mirrorsync.formats.index import SpecInfo
from mirrorsync.store import Store, writes


def generated_spec(i: int, package: str = "pkg") -> SpecInfo:
    return SpecInfo(
        fake_hash(f"big{package}{i}"),
        f"{package}-{i % 97}",
        f"{i}.0",
        "linux",
        "ubuntu22.04",
        "x86_64_v3",
        "gcc@12.3.0",
        ("+shared",),
    )


def build_history(
    path: Path,
    *,
    stacks: dict[tuple[str, str], int],
    versions: int = 1,
    at: str = "2026-11-20T08:00:00.000000Z",
    source: str = "test",
) -> None:
    """``stacks``: (release, stack) -> specs added per version; ``versions`` commits each."""

    async def build() -> None:
        async with await Store.open(path) as store:
            source_id = await writes.ensure_source(store, source, "catalog", "http://x.invalid/")
            for (release, name), per_version in stacks.items():
                row = await writes.ensure_stack(store, source_id, release, name)
                for v in range(versions):
                    added = [
                        generated_spec(v * per_version + i, f"{release}{name}")
                        for i in range(per_version)
                    ]
                    snapshot = writes.Snapshot(row.id, None, None, added, (), announce=v == 0)
                    day = f"{at[:8]}{int(at[8:10]) + v:02d}{at[10:]}"
                    await writes.commit_snapshot(store, snapshot, day)

    anyio.run(build)
