-- Hashes a stack's latest index lists with in_buildcache false (dependencies it
-- did not push, externals such as a system compiler). They are not members: no
-- membership, version or event. But the cache.spack.io generator names every
-- stack whose index lists a hash among that spec's stacks (FORMATS.md section 5),
-- so export pages needs them. Current state only, replaced by each sync.
CREATE TABLE listed_uncached (
    stack_id INTEGER NOT NULL REFERENCES stacks(id),
    hash     TEXT NOT NULL,
    PRIMARY KEY (stack_id, hash)
) WITHOUT ROWID;
CREATE INDEX listed_uncached_by_hash ON listed_uncached (hash);
