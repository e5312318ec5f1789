"""Checking PGP clear-signed documents with gpg, against the keys a mirror publishes.

Each :class:`Keyring` is a private gpg home directory holding only the public
keys imported into it, so a signature is good only if it was made by one of
the mirror's own keys. gpg runs as a subprocess (``--batch --no-autostart``:
verifying needs no agent); its machine-readable ``--status-fd`` output decides.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import anyio

from mirrorsync.errors import SignatureError

GPG_TIMEOUT = 60.0


def gpg_program() -> str | None:
    """The gpg executable on ``PATH``, or None."""
    return shutil.which("gpg")


class Keyring:
    """A throwaway gpg home with a mirror's public keys."""

    def __init__(self, home: Path, program: str) -> None:
        self.home = home
        self.program = program
        self.fingerprints: set[str] = set()

    @classmethod
    def create(cls, home: Path) -> Keyring:
        program = gpg_program()
        if program is None:
            raise SignatureError(str(home), "verify_signatures is on but gpg is not installed")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(home, program)

    async def import_key(self, data: bytes, url: str) -> None:
        """Import the public key(s) in ``data`` (armoured or binary)."""
        rc, status, stderr = await self._run(["--import"], data)
        imported = [line.split()[2] for line in status if line.startswith("IMPORT_OK ")]
        if rc != 0 or not imported:
            raise SignatureError(url, f"gpg could not import a public key: {_last_line(stderr)}")
        self.fingerprints.update(fp.upper() for fp in imported)

    async def verify(self, data: bytes, url: str) -> str:
        """Check a clear-signed document; return the signing key's fingerprint.

        Raises SignatureError unless gpg reports every signature good and valid.
        """
        rc, status, stderr = await self._run(["--verify"], data)
        words = [line.split() for line in status]
        kinds = {w[0] for w in words if w}
        valid = [w[1].upper() for w in words if len(w) > 1 and w[0] == "VALIDSIG"]
        if rc == 0 and "GOODSIG" in kinds and valid and not kinds & _BAD:
            return valid[0]
        if "BADSIG" in kinds:
            problem = "bad signature: the signed text was changed"
        elif "ERRSIG" in kinds or "NO_PUBKEY" in kinds:
            problem = "signed by a key the mirror does not publish"
        elif kinds & {"EXPSIG", "EXPKEYSIG", "REVKEYSIG"}:
            problem = "signature by an expired or revoked key"
        elif "NODATA" in kinds:
            problem = "no signature found"
        else:
            problem = f"signature not accepted by gpg: {_last_line(stderr)}"
        raise SignatureError(url, problem)

    async def _run(self, args: list[str], data: bytes) -> tuple[int, list[str], str]:
        command = [
            self.program,
            "--batch",
            "--no-tty",
            "--no-autostart",
            "--homedir",
            str(self.home),
            "--status-fd",
            "1",
            *args,
        ]
        env = {**os.environ, "LC_ALL": "C"}
        try:
            with anyio.fail_after(GPG_TIMEOUT):
                result = await anyio.run_process(command, input=data, check=False, env=env)
        except TimeoutError:
            raise SignatureError(str(self.home), f"gpg took over {GPG_TIMEOUT:.0f}s") from None
        except OSError as exc:
            raise SignatureError(str(self.home), f"cannot run gpg: {exc}") from None
        status = [
            line.removeprefix("[GNUPG:] ")
            for line in result.stdout.decode("utf-8", "replace").splitlines()
            if line.startswith("[GNUPG:] ")
        ]
        return result.returncode, status, result.stderr.decode("utf-8", "replace")


_BAD = frozenset({"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY", "NODATA"})


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
