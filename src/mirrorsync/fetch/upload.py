"""A file uploaded as it is read: its bytes in worker threads, a batch at a time."""

from __future__ import annotations

from pathlib import Path

import anyio

from mirrorsync.fetch.body import BATCH


class FileChunks:
    """A file's bytes for an upload, read in a worker thread ``BATCH`` bytes at a time.

    Not a generator: aiohttp iterates the body in a task of its own, which may
    still be inside a read when the request ends (an error answer, a deadline);
    ``close`` then only closes the file, and that read ends the iteration."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115  (closed by close(), after the request)

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await anyio.to_thread.run_sync(self._read)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    def _read(self) -> bytes:
        try:
            return self._file.read(BATCH)
        except ValueError:  # closed: the request is over
            return b""

    def close(self) -> None:
        self._file.close()
