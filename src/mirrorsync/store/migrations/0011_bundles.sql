-- Bundles of a copy for air-gapped sites (issue 28): `bundle export` and `bundle import`.
--
-- mirrors.origin: for a copy received by `bundle import`, the name of the copy its
-- bundles were exported from (at the sending site); NULL for a copy made from a
-- source. A received copy has no configured source: its source_id names a row of
-- kind 'bundle' named "bundle:ORIGIN" (a configured source's name cannot hold ':'),
-- so its mirror.updated events name the bundle's origin copy as their source.
ALTER TABLE mirrors ADD COLUMN origin TEXT;

-- Each bundle this site exported of a copy: the copy's version it carries, the
-- version the receiver was assumed to hold (0: a full bundle), and the state it
-- carried (every file of to_version: zlib-compressed JSON {path: [size, sha256]}),
-- which the next incremental bundle is made against (`--since` defaults to the
-- last exported version).
CREATE TABLE bundle_exports (
    id           INTEGER PRIMARY KEY,
    mirror_id    INTEGER NOT NULL REFERENCES mirrors(id),
    from_version INTEGER NOT NULL,
    to_version   INTEGER NOT NULL,
    exported_at  TEXT NOT NULL,
    files        INTEGER NOT NULL,  -- carried in the bundle
    bytes        INTEGER NOT NULL,
    state        BLOB NOT NULL
);
CREATE INDEX bundle_exports_by_copy ON bundle_exports (mirror_id, to_version);

-- Each bundle this site imported into a received copy: the origin copy's versions
-- it joined, the bundle manifest's sha256 (a second import is a no-op) and the
-- receiving copy's own version it published.
CREATE TABLE bundle_imports (
    id              INTEGER PRIMARY KEY,
    mirror_id       INTEGER NOT NULL REFERENCES mirrors(id),
    origin          TEXT NOT NULL,
    from_version    INTEGER NOT NULL,
    to_version      INTEGER NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    version         INTEGER NOT NULL,
    imported_at     TEXT NOT NULL,
    files           INTEGER NOT NULL,
    bytes           INTEGER NOT NULL
);
CREATE INDEX bundle_imports_by_copy ON bundle_imports (mirror_id, to_version);
