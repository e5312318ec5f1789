-- Copies chosen by environment and kept after upstream prunes (issue 26).
--
-- mirror_kept: each time a spec a copy held left upstream's index, when, and
-- what the copy needs to keep publishing it under the Admission rule: the index
-- record as the copy published it, the stack it came from, and the sha256 and
-- signer of the manifest the crawl verified. left_copy_at: when the copy let
-- it go (NULL while it holds it); back_upstream_at: upstream lists it again.
CREATE TABLE mirror_kept (
    mirror_id        INTEGER NOT NULL REFERENCES mirrors(id),
    hash             TEXT NOT NULL,
    name             TEXT NOT NULL,
    left_upstream_at TEXT NOT NULL,
    left_copy_at     TEXT,
    back_upstream_at TEXT,
    stack_id         INTEGER NOT NULL,
    manifest_sha256  TEXT,
    signer           TEXT,
    record_json      TEXT NOT NULL,
    PRIMARY KEY (mirror_id, hash, left_upstream_at)
);

-- Hashes a copy's environments or hash list name that no synced stack holds
-- (its last run's): "wanted but not in upstream".
CREATE TABLE mirror_wanted_missing (
    mirror_id INTEGER NOT NULL REFERENCES mirrors(id),
    hash      TEXT NOT NULL,
    name      TEXT NOT NULL,
    PRIMARY KEY (mirror_id, hash)
);
