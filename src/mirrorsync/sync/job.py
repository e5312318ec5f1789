"""One stack to sync or retire, with its source's settings: what planning a source
(``sync.source``) hands to syncing a stack (``sync.stack``)."""

from __future__ import annotations

from dataclasses import dataclass

from mirrorsync.config import CatalogSource, MirrorSource
from mirrorsync.errors import FormatError
from mirrorsync.fetch import Url
from mirrorsync.formats.catalog import locate_index
from mirrorsync.sync.index import Target


@dataclass(frozen=True, slots=True)
class StackJob:
    """One stack to sync or retire, with the settings of its source."""

    source: CatalogSource | MirrorSource  # manifests, verify_signatures, insecure, buckets
    source_id: int
    release: str
    stack: str
    catalog_url: str | None = None  # where the catalogue says its index is (catalog sources)
    retire: bool = False  # the catalogue no longer lists it

    @property
    def label(self) -> str:
        return f"{self.source.name}:{self.release}/{self.stack}"

    def target(self) -> Target:
        """Where to look for the index; FormatError (naming the catalogue) if nowhere sane."""
        if self.catalog_url is None:
            assert isinstance(self.source, MirrorSource)
            return Target(
                mirror_root=Url(self.source.url).rstrip("/"), layout=None, view=self.source.view
            )
        assert isinstance(self.source, CatalogSource)
        try:
            location = locate_index(self.catalog_url, self.source.buckets())
        except FormatError as exc:
            raise exc.at(self.source.url) if exc.url is None else exc from None
        return Target(Url(location.mirror_root), location.layout, location.index_checksum)
