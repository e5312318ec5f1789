-- Versioned history of build cache stacks.
--
-- Cost is O(changes): a spec's metadata is stored once per hash, and its
-- presence in a stack is an interval of stack versions [entered, left).

CREATE TABLE sources (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    url  TEXT NOT NULL
);

-- Releases a catalogue source has listed (within its release filters).
CREATE TABLE releases (
    source_id  INTEGER NOT NULL REFERENCES sources(id),
    name       TEXT NOT NULL,
    present    INTEGER NOT NULL,
    added_at   TEXT NOT NULL,
    removed_at TEXT,
    PRIMARY KEY (source_id, name)
) WITHOUT ROWID;

CREATE TABLE stacks (
    id             INTEGER PRIMARY KEY,
    source_id      INTEGER NOT NULL REFERENCES sources(id),
    release        TEXT NOT NULL,
    name           TEXT NOT NULL,
    present        INTEGER NOT NULL DEFAULT 0,  -- announced (stack.added) and not removed
    index_url      TEXT,
    mirror_root    TEXT,
    layout         TEXT,
    index_checksum TEXT,                        -- sha256 of the index last synced
    version        INTEGER NOT NULL DEFAULT 0,  -- current version; 0 = never synced
    spec_count     INTEGER NOT NULL DEFAULT 0,
    last_checked   TEXT,
    last_changed   TEXT,
    last_error     TEXT,
    last_error_at  TEXT,
    UNIQUE (source_id, release, name)
);

CREATE TABLE stack_versions (
    stack_id       INTEGER NOT NULL REFERENCES stacks(id),
    version        INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    index_checksum TEXT,
    spec_count     INTEGER NOT NULL,
    added          INTEGER NOT NULL,
    removed        INTEGER NOT NULL,
    PRIMARY KEY (stack_id, version)
) WITHOUT ROWID;

CREATE TABLE specs (
    id         INTEGER PRIMARY KEY,
    hash       TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    platform   TEXT NOT NULL,
    os         TEXT NOT NULL,
    target     TEXT NOT NULL,
    compiler   TEXT,            -- "gcc@=11.4.0" (database v7); NULL for v8
    variants   TEXT NOT NULL,   -- JSON list, cache.spack.io order: ["+mpi", "build_type=Release"]
    first_seen TEXT NOT NULL
);
CREATE INDEX specs_by_name ON specs (name);

CREATE TABLE memberships (
    stack_id INTEGER NOT NULL REFERENCES stacks(id),
    spec_id  INTEGER NOT NULL REFERENCES specs(id),
    entered  INTEGER NOT NULL,  -- first stack version that holds the spec
    left     INTEGER,           -- first stack version that no longer does; NULL while held
    PRIMARY KEY (stack_id, spec_id, entered)
) WITHOUT ROWID;
CREATE INDEX memberships_current ON memberships (stack_id, spec_id) WHERE left IS NULL;
CREATE INDEX memberships_by_spec ON memberships (spec_id);

CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    type          TEXT NOT NULL,  -- spec.added spec.removed stack.added stack.removed release.added release.removed
    source_id     INTEGER NOT NULL REFERENCES sources(id),
    release       TEXT NOT NULL,
    stack_id      INTEGER REFERENCES stacks(id),
    spec_id       INTEGER REFERENCES specs(id),
    stack_version INTEGER,
    occurred_at   TEXT NOT NULL
);
CREATE INDEX events_by_type ON events (type, id);

-- Small documents (catalogues, index manifests, index.json.hash) with their
-- HTTP validators, for conditional requests.
CREATE TABLE http_cache (
    url           TEXT PRIMARY KEY,
    etag          TEXT,
    last_modified TEXT,
    body          BLOB NOT NULL
) WITHOUT ROWID;
