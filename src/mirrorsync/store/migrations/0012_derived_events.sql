-- Events about many specs at once are derived from the memberships (issue 31).
--
-- A stack version's spec.added events are its memberships entered at that
-- version, its spec.removed events those that left at it, in hash order: one
-- stored row (event_rows, span = how many) stands for all of them, and holds
-- their ids, from its own id to id + span - 1. Every other event is one row
-- (span NULL). The view `events` shows every event as before, one row each,
-- with the same ids, so readers (and SQL written against the database) are
-- unchanged; the store reads spans through bounded subqueries of the same
-- shape (store.queries.event_source).
--
-- Existing databases: each group of per-spec rows (stack, version, type) whose
-- ids run without a gap in the hash order of exactly the memberships it derives
-- from becomes one span row; any other group stays as it is. The outbox keeps
-- its event ids, so it no longer references a stored row.

CREATE TABLE webhook_outbox_0012 (
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id),
    event_id    INTEGER NOT NULL,  -- an id of `events` (one stored row, or in a span)
    delivery_id INTEGER REFERENCES webhook_deliveries(id),
    PRIMARY KEY (webhook_id, event_id)
) WITHOUT ROWID;
INSERT INTO webhook_outbox_0012 (webhook_id, event_id, delivery_id)
    SELECT webhook_id, event_id, delivery_id FROM webhook_outbox;
DROP TABLE webhook_outbox;
ALTER TABLE webhook_outbox_0012 RENAME TO webhook_outbox;
CREATE INDEX webhook_outbox_by_delivery ON webhook_outbox (delivery_id)
    WHERE delivery_id IS NOT NULL;

ALTER TABLE events RENAME TO event_rows;
ALTER TABLE event_rows ADD COLUMN span INTEGER;  -- NULL: one event; else spec events derived

CREATE TABLE spans_0012 AS
    SELECT g.first_id, g.type, g.stack_id, g.stack_version, g.n FROM (
        SELECT min(x.id) AS first_id, x.type, x.stack_id, x.stack_version, count(*) AS n,
            count(DISTINCT x.spec_id) AS distinct_specs,
            count(DISTINCT x.occurred_at) AS times,
            count(DISTINCT x.source_id) AS sources,
            count(DISTINCT x.release) AS releases,
            sum(CASE WHEN x.in_place THEN 0 ELSE 1 END) AS out_of_place
        FROM (
            SELECT e.id, e.type, e.stack_id, e.stack_version, e.spec_id, e.occurred_at,
                e.source_id, e.release,
                e.id - min(e.id) OVER (PARTITION BY e.stack_id, e.stack_version, e.type)
                    = row_number() OVER (
                        PARTITION BY e.stack_id, e.stack_version, e.type ORDER BY s.hash
                    ) - 1 AS in_place,
                EXISTS (
                    SELECT 1 FROM memberships m WHERE m.stack_id = e.stack_id
                    AND m.spec_id = e.spec_id
                    AND ((e.type = 'spec.added' AND m.entered = e.stack_version)
                        OR (e.type = 'spec.removed' AND m.left = e.stack_version))
                ) AS member
            FROM event_rows e JOIN specs s ON s.id = e.spec_id
            WHERE e.type IN ('spec.added', 'spec.removed')
            AND e.stack_id IS NOT NULL AND e.stack_version IS NOT NULL
        ) x
        WHERE x.member
        GROUP BY x.type, x.stack_id, x.stack_version
    ) g
    WHERE g.distinct_specs = g.n AND g.times = 1 AND g.sources = 1 AND g.releases = 1
    AND g.out_of_place = 0
    AND g.n = (
        SELECT count(*) FROM event_rows e WHERE e.type = g.type AND e.stack_id = g.stack_id
        AND e.stack_version = g.stack_version
    )
    AND g.n = (
        SELECT count(*) FROM memberships m WHERE m.stack_id = g.stack_id
        AND ((g.type = 'spec.added' AND m.entered = g.stack_version)
            OR (g.type = 'spec.removed' AND m.left = g.stack_version))
    );
CREATE INDEX spans_0012_by_group ON spans_0012 (stack_id, stack_version, type);

UPDATE event_rows SET span = (SELECT g.n FROM spans_0012 g WHERE g.first_id = event_rows.id),
    spec_id = NULL
    WHERE id IN (SELECT first_id FROM spans_0012);
DELETE FROM event_rows WHERE span IS NULL AND EXISTS (
    SELECT 1 FROM spans_0012 g WHERE g.stack_id = event_rows.stack_id
    AND g.stack_version = event_rows.stack_version AND g.type = event_rows.type
);
DROP TABLE spans_0012;

CREATE VIEW events AS
    SELECT id, type, source_id, release, stack_id, spec_id, stack_version, occurred_at
    FROM event_rows WHERE span IS NULL
    UNION ALL
    SELECT r.id - 1 + row_number() OVER (PARTITION BY r.id ORDER BY s.hash) AS id,
        r.type, r.source_id, r.release, r.stack_id, m.spec_id, r.stack_version, r.occurred_at
    FROM event_rows r JOIN memberships m ON m.stack_id = r.stack_id
        AND ((r.type = 'spec.added' AND m.entered = r.stack_version)
            OR (r.type = 'spec.removed' AND m.left = r.stack_version))
    JOIN specs s ON s.id = m.spec_id
    WHERE r.span IS NOT NULL;
