-- A copy holds only what the sync verified (issue 25): each spec manifest's
-- sha256 as the crawl read and verified it (a copy publishes those bytes and no
-- others) and the primary fingerprint of the key whose signature gpg accepted
-- (NULL: not checked); and, per copy, the specs its last run left out and why.

ALTER TABLE spec_manifests ADD COLUMN manifest_sha256 TEXT;
ALTER TABLE spec_manifests ADD COLUMN signer TEXT;

CREATE TABLE mirror_left_out (
    mirror_id INTEGER NOT NULL REFERENCES mirrors(id),
    hash      TEXT NOT NULL,
    name      TEXT NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (mirror_id, hash)
);
