-- Spec manifests crawled per stack (FORMATS.md sections 2 and 3): the size and
-- checksum of each binary, the checksum of its spec metadata, and whether its
-- manifest could be read. One row per (stack, spec), replaced on each fetch.

CREATE TABLE spec_manifests (
    stack_id          INTEGER NOT NULL REFERENCES stacks(id),
    spec_id           INTEGER NOT NULL REFERENCES specs(id),
    status            TEXT NOT NULL,  -- ok | missing | malformed | bad_signature | error
    problem           TEXT,           -- why it is not ok
    tarball_size      INTEGER,        -- bytes: v3 contentLength, v2 Content-Length of a HEAD
    tarball_algorithm TEXT,
    tarball_checksum  TEXT,
    spec_algorithm    TEXT,
    spec_checksum     TEXT,           -- v3: the spec blob; v2: the .spec.json(.sig) as served
    fetched_at        TEXT NOT NULL,
    PRIMARY KEY (stack_id, spec_id)
) WITHOUT ROWID;

-- A crawl with policy 'all' under way: manifests fetched before started_at are
-- fetched again, those fetched since are not, so a killed run resumes the pass.
CREATE TABLE manifest_crawls (
    stack_id    INTEGER PRIMARY KEY REFERENCES stacks(id),
    started_at  TEXT NOT NULL,
    finished_at TEXT
);

-- Pages look sizes up by spec.
CREATE INDEX spec_manifests_by_spec ON spec_manifests (spec_id);
