"""The one rule deciding which specs a copy may hold.

A spec enters a copy only if, in the synced state, its manifest was fetched and
parsed (status ``ok``, with the sha256 of the bytes read on record), its
signature was verified when the source verifies signatures, and its name,
version and hash are safe to build a path from. At copy time the copier adds
what only it can see: the manifest fetched again must be the very bytes the
crawl verified, and every blob must match its length and digest. A spec that
fails is left out with its reason, and so is every selected spec that needs it
(link/run, recursively).

A spec upstream no longer lists that the copy keeps (``keep: selected`` or a
duration) stays under the same rule: the evidence is what the crawl recorded
when the copy took it in (``mirror_kept``: the manifest's sha256 and signer),
given with :meth:`Admission.keep`; the copier checks the manifest on disk
against it and every blob against the manifest, as for any other spec.

:class:`Admission` is the only way to these verdicts: ``plan.select`` and the
:class:`~mirrorsync.mirrors.download.Copier` both require one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from mirrorsync.formats._common import polite_filename
from mirrorsync.formats.rawindex import RawInstall
from mirrorsync.store.manifests import BAD_SIGNATURE, MALFORMED, MISSING, OK
from mirrorsync.store.mirrors import LeftOut, ManifestState

_SAFE_PART = re.compile(r"^[A-Za-z0-9_+][A-Za-z0-9_+.-]{0,199}$")
_SAFE_HASH = re.compile(r"^[a-z0-9]{32}$")

CHANGED = "manifest changed upstream since the crawl verified it"

_WHY = {
    MISSING: "manifest missing",
    MALFORMED: "manifest malformed",
    BAD_SIGNATURE: "manifest signature not accepted",
}


def path_safe(record: RawInstall) -> bool:
    """Whether the spec's manifest path is made of plain names (never ``..``, ``/``)."""
    return bool(
        _SAFE_PART.match(record.name)
        and _SAFE_PART.match(polite_filename(record.version))
        and _SAFE_HASH.match(record.hash)
    )


@dataclass
class Admission:
    """The crawl's verdicts for a copy's stacks, and what the copy run left out since."""

    states: dict[tuple[int, str], ManifestState]  # (stack id, hash) -> recorded
    verifies: bool  # the source verifies signatures: a spec needs a recorded signer
    left: dict[str, LeftOut] = field(default_factory=dict)  # hash -> why it is out
    #: (stack id, hash) -> the crawl's verdict recorded when a kept spec left upstream.
    kept: dict[tuple[int, str], ManifestState] = field(default_factory=dict)

    def keep(self, stack_id: int, spec_hash: str, manifest_sha256: str, signer: str | None) -> None:
        """The evidence for a spec upstream no longer lists: what the crawl verified
        when the copy took it in. It outranks any later crawl row (upstream deleted it)."""
        self.kept[(stack_id, spec_hash)] = ManifestState(OK, None, manifest_sha256, signer)

    def _state(self, stack_id: int, spec_hash: str) -> ManifestState | None:
        key = (stack_id, spec_hash)
        return self.kept.get(key) or self.states.get(key)

    def check(self, stack_id: int, record: RawInstall) -> str | None:
        """Why the binary cannot enter the copy (None: it may), by the crawl's record."""
        if not path_safe(record):
            return "name, version or hash not safe as a file name"
        state = self._state(stack_id, record.hash)
        if state is None:
            return "manifest not fetched by the sync yet"
        if state.status != OK:
            why = _WHY.get(state.status, "manifest could not be fetched")
            return f"{why}: {state.problem}" if state.problem else why
        if state.manifest_sha256 is None:
            return "manifest fetched before its checksum was recorded; sync again"
        if self.verifies and state.signer is None:
            return "signature not verified by the sync; sync again"
        return None

    def expected(self, stack_id: int, spec_hash: str) -> ManifestState:
        """The recorded state of an admitted binary (``check`` said None)."""
        state = self._state(stack_id, spec_hash)
        assert state is not None  # check() said None
        return state

    def leave_out(self, record: RawInstall, reason: str) -> None:
        self.left.setdefault(record.hash, LeftOut(record.hash, record.name, reason))

    def fingerprint(self) -> str:
        """Changes when any verdict does: part of what a copy's state follows from."""
        digest = hashlib.sha256(b"admission 1\0" + str(self.verifies).encode())
        for (stack_id, spec_hash), s in sorted({**self.states, **self.kept}.items()):
            digest.update(
                f"{stack_id} {spec_hash} {s.status} {s.manifest_sha256} {s.signer}\n".encode()
            )
        return digest.hexdigest()

    @property
    def left_out(self) -> list[LeftOut]:
        return sorted(self.left.values(), key=lambda x: (x.name, x.hash))

    def signers(self, stack_id: int, hashes: set[str]) -> set[str]:
        """The keys that signed the manifests of ``hashes`` in the stack."""
        return {
            s.signer
            for h in hashes
            if (s := self._state(stack_id, h)) is not None and s.signer is not None
        }
