-- Local copies of build caches (config `mirrors:`): each copy's published
-- state, its history, the binaries its published index lists, and the files
-- no published index references any more, waiting for `delete_after`.

CREATE TABLE mirrors (
    id             INTEGER PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    path           TEXT NOT NULL,
    source_id      INTEGER NOT NULL REFERENCES sources(id),
    release        TEXT NOT NULL,
    version        INTEGER NOT NULL DEFAULT 0,  -- published states so far; 0 = never
    binaries       INTEGER NOT NULL DEFAULT 0,  -- in the published index (in_buildcache true)
    bytes          INTEGER NOT NULL DEFAULT 0,  -- of every file the published index references
    index_checksum TEXT,                        -- sha256 of the published index blob
    plan_key       TEXT,                        -- what it was made from: upstream indexes, filters
    last_published TEXT,
    last_checked   TEXT,
    last_error     TEXT,
    last_error_at  TEXT
);

CREATE TABLE mirror_versions (
    mirror_id      INTEGER NOT NULL REFERENCES mirrors(id),
    version        INTEGER NOT NULL,
    published_at   TEXT NOT NULL,
    index_checksum TEXT NOT NULL,
    binaries       INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    added          INTEGER NOT NULL,
    removed        INTEGER NOT NULL,
    event_id       INTEGER REFERENCES events(id),  -- its mirror.updated event
    PRIMARY KEY (mirror_id, version)
) WITHOUT ROWID;
CREATE INDEX mirror_versions_by_event ON mirror_versions (event_id);

-- The binaries (spec hashes) of each copy's published index.
CREATE TABLE mirror_members (
    mirror_id INTEGER NOT NULL REFERENCES mirrors(id),
    hash      TEXT NOT NULL,
    PRIMARY KEY (mirror_id, hash)
) WITHOUT ROWID;

-- Files under a copy (relative paths) that no published index references,
-- since when: deleted once `delete_after` has passed.
CREATE TABLE mirror_orphans (
    mirror_id INTEGER NOT NULL REFERENCES mirrors(id),
    path      TEXT NOT NULL,
    since     TEXT NOT NULL,
    PRIMARY KEY (mirror_id, path)
) WITHOUT ROWID;
