"""Checking PGP clear-signed documents with gpg, against trusted public keys.

Each :class:`Keyring` is a private gpg home directory holding only the public
keys imported into it, so a signature is good only if it was made by one of
them: the keys of the source's ``trusted_keys`` when it has some, else the
keys the mirror itself publishes. gpg runs as a subprocess (``--batch --no-autostart``:
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
        self.pinned = False  # True: the keys are the source's trusted_keys

    @classmethod
    def create(cls, home: Path) -> Keyring:
        program = gpg_program()
        if program is None:
            raise SignatureError(str(home), "verify_signatures is on but gpg is not installed")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(home, program)

    async def import_key(self, data: bytes, url: str) -> None:
        """Import the public key(s) in ``data`` (armoured or binary)."""
        self.fingerprints.update(await self._import(data, url))

    async def import_only(self, data: bytes, url: str, fingerprint: str) -> None:
        """Import from ``data`` the one key whose fingerprint is ``fingerprint``, nothing else.

        ``data`` comes from a mirror, so it may hold other keys, or another key
        under that name: it is read into a scratch home first, and only the key
        with that fingerprint is carried over. SignatureError if it is not there.
        """
        scratch = Keyring(
            self.home.with_name(f"{self.home.name}-{fingerprint[-16:]}"), self.program
        )
        scratch.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        found = await scratch._import(data, url)
        if fingerprint not in found:
            raise SignatureError(
                url,
                f"the key served for trusted key {fingerprint} is {', '.join(sorted(found))}; "
                "not trusted",
            )
        exported = await scratch._export(fingerprint)
        if not exported:
            raise SignatureError(url, f"gpg could not export {fingerprint}")
        imported = await self._import(exported, url)
        self.fingerprints.update(imported & {fingerprint})

    async def export_armored(self, fingerprint: str) -> bytes:
        """The public key ``fingerprint`` ASCII-armoured, as Spack publishes keys (b"": none)."""
        if fingerprint not in self.fingerprints:
            return b""
        return await self._export(fingerprint, armor=True)

    async def _export(self, fingerprint: str, *, armor: bool = False) -> bytes:
        """The public key ``fingerprint`` (binary), or b"" if gpg has none."""
        command = [self.program, "--batch", "--no-tty", "--homedir", str(self.home)]
        if armor:
            command.append("--armor")
        try:
            with anyio.fail_after(GPG_TIMEOUT):
                result = await anyio.run_process(
                    [*command, "--export", fingerprint],
                    check=False,
                    env={**os.environ, "LC_ALL": "C"},
                )
        except (TimeoutError, OSError):
            return b""
        return result.stdout if result.returncode == 0 else b""

    async def _import(self, data: bytes, url: str) -> set[str]:
        rc, status, stderr = await self._run(["--import"], data)
        imported = {line.split()[2].upper() for line in status if line.startswith("IMPORT_OK ")}
        if rc != 0 or not imported:
            raise SignatureError(url, f"gpg could not import a public key: {_last_line(stderr)}")
        return imported

    async def verify(self, data: bytes, url: str) -> str:
        """Check a clear-signed document; return the signing primary key's fingerprint.

        Raises SignatureError unless gpg reports every signature good and valid.
        """
        rc, status, stderr = await self._run(["--verify"], data)
        return self._judge(rc, status, stderr, url)

    async def verify_detached(self, signature: bytes, data: bytes, url: str) -> str:
        """Check a detached signature of ``data``; return the signing primary key's
        fingerprint (SignatureError unless gpg reports it good, valid and by one of
        this keyring's keys), as :meth:`verify` does for a clear-signed document."""
        sig = self.home / "detached.sig"
        sig.write_bytes(signature)
        try:
            rc, status, stderr = await self._run(["--verify", str(sig), "-"], data)
        finally:
            sig.unlink(missing_ok=True)
        return self._judge(rc, status, stderr, url)

    def _judge(self, rc: int, status: list[str], stderr: str, url: str) -> str:
        words = [line.split() for line in status]
        kinds = {w[0] for w in words if w}
        valid = [w[1].upper() for w in words if len(w) > 1 and w[0] == "VALIDSIG"]
        # VALIDSIG's last field is the primary key's fingerprint (the signer may be a subkey).
        primaries = {w[10].upper() for w in words if len(w) > 10 and w[0] == "VALIDSIG"}
        unknown = (
            "a key not in trusted_keys" if self.pinned else "a key the mirror does not publish"
        )
        if rc == 0 and "GOODSIG" in kinds and valid and not kinds & _BAD:
            if primaries <= self.fingerprints:
                first = next(w for w in words if len(w) > 1 and w[0] == "VALIDSIG")
                return first[10].upper() if len(first) > 10 else valid[0]
            raise SignatureError(url, f"signed by {unknown}")
        if "BADSIG" in kinds:
            problem = "bad signature: the signed text was changed"
        elif "ERRSIG" in kinds or "NO_PUBKEY" in kinds:
            problem = f"signed by {unknown}"
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


async def sign_detached(data: bytes, key_id: str, home: Path | None = None) -> bytes:
    """An armoured detached signature of ``data`` by the secret key ``key_id`` of the
    user's keyring (``home``: that gpg home instead; else ``$GNUPGHOME`` or ~/.gnupg).
    SignatureError naming the key if gpg cannot sign."""
    program = gpg_program()
    if program is None:
        raise SignatureError(key_id, "--sign needs gpg, which is not installed")
    command = [program, "--batch", "--no-tty", "--armor", "--local-user", key_id]
    if home is not None:
        command += ["--homedir", str(home)]
    try:
        with anyio.fail_after(GPG_TIMEOUT):
            result = await anyio.run_process(
                [*command, "--detach-sign"],
                input=data,
                check=False,
                env={**os.environ, "LC_ALL": "C"},
            )
    except TimeoutError:
        raise SignatureError(key_id, f"gpg took over {GPG_TIMEOUT:.0f}s to sign") from None
    except OSError as exc:
        raise SignatureError(key_id, f"cannot run gpg: {exc}") from None
    if result.returncode != 0 or not result.stdout:
        stderr = result.stderr.decode("utf-8", "replace")
        raise SignatureError(key_id, f"gpg could not sign: {_last_line(stderr)}")
    return bytes(result.stdout)


async def export_public(key_id: str, home: Path | None = None) -> bytes:
    """The public key ``key_id`` of the user's keyring, armoured (b"": none)."""
    program = gpg_program()
    if program is None:
        return b""
    command = [program, "--batch", "--no-tty", "--armor"]
    if home is not None:
        command += ["--homedir", str(home)]
    try:
        with anyio.fail_after(GPG_TIMEOUT):
            result = await anyio.run_process(
                [*command, "--export", key_id], check=False, env={**os.environ, "LC_ALL": "C"}
            )
    except (TimeoutError, OSError):
        return b""
    return bytes(result.stdout) if result.returncode == 0 else b""


_BAD = frozenset({"BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY", "NODATA"})


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
