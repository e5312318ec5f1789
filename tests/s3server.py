"""moto's S3 server (``moto_server``, a real HTTP S3 API) in its own process on a loopback
port, for the S3 tests; and a boto3 client of it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: Test credentials (moto accepts any unless its IAM checks are on).
AWS = {
    "AWS_ACCESS_KEY_ID": "mirrorsync-test",
    "AWS_SECRET_ACCESS_KEY": "mirrorsync-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups on a test machine
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def client(endpoint: str) -> Any:
    import boto3  # type: ignore[import-untyped]

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
    )


@contextmanager
def moto_server(*, checks_credentials: bool = False) -> Iterator[str]:
    """The server's endpoint URL while it runs. ``checks_credentials``: moto's IAM
    checks on from the first request (an unknown access key is refused, as by S3)."""
    port = free_port()
    env = {**os.environ, **AWS}
    if checks_credentials:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # up when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
