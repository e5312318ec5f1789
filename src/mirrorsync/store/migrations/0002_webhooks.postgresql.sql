-- Webhooks: an outbox of events per endpoint, filled in the same transaction
-- as the events themselves, and the deliveries (batches) made from it.
--
-- Secrets are never stored: they are read from the environment, a file or the
-- configuration when a request is signed.

CREATE TABLE webhooks (
    id                     INTEGER PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    url                    TEXT NOT NULL,
    configured             INTEGER NOT NULL DEFAULT 1,  -- still in the configuration
    enabled                INTEGER NOT NULL DEFAULT 1,  -- 0 after the endpoint answered 410 Gone
    disabled_reason        TEXT,
    disabled_at            TEXT,
    registered_at          TEXT NOT NULL,
    registered_after_event INTEGER NOT NULL,            -- events above this id are enqueued
    failures               INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts
    next_attempt_at        TEXT,                        -- no attempt before (between runs)
    last_success_at        TEXT,
    last_error             TEXT,
    last_error_at          TEXT
);

-- What an event must match to be enqueued for a webhook. Per field, an event
-- matches when the webhook has no row for the field or the value GLOBs one.
CREATE TABLE webhook_filters (
    webhook_id INTEGER NOT NULL REFERENCES webhooks(id),
    field      TEXT NOT NULL,  -- type | release | stack | package
    glob       TEXT NOT NULL,  -- SQLite GLOB syntax
    PRIMARY KEY (webhook_id, field, glob)
) WITHOUT ROWID;

-- One POST of a batch of events. Its composition (the outbox rows pointing at
-- it) and message id are fixed before the first attempt, so every retry sends
-- the same events under the same webhook-id.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    webhook_id      INTEGER NOT NULL REFERENCES webhooks(id),
    message_id      TEXT NOT NULL UNIQUE,  -- the webhook-id header
    state           TEXT NOT NULL,         -- pending | delivered | dead
    created_at      TEXT NOT NULL,
    oldest_event_at TEXT NOT NULL,         -- its age is measured from here
    first_event_id  INTEGER NOT NULL,
    last_event_id   INTEGER NOT NULL,
    event_count     INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_attempt_at TEXT,
    last_error      TEXT,
    finished_at     TEXT                   -- when delivered or declared dead
);
CREATE INDEX webhook_deliveries_open ON webhook_deliveries (webhook_id, state, id);

-- Events a webhook has yet to acknowledge. delivery_id is NULL until the event
-- is put in a batch; the rows are deleted when the receiver acknowledges it.
CREATE TABLE webhook_outbox (
    webhook_id  INTEGER NOT NULL REFERENCES webhooks(id),
    event_id    INTEGER NOT NULL REFERENCES events(id),
    delivery_id INTEGER REFERENCES webhook_deliveries(id),
    PRIMARY KEY (webhook_id, event_id)
) WITHOUT ROWID;
CREATE INDEX webhook_outbox_by_delivery ON webhook_outbox (delivery_id)
    WHERE delivery_id IS NOT NULL;

-- PostgreSQL has no GLOB: the filters keep SQLite's glob syntax, matched through
-- a regular expression made of each glob (* any run, ? one character, [...] and
-- [^...] sets; anything else literal, case sensitive, the whole value).
CREATE FUNCTION mirrorsync_glob_regex(pattern TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT '^' || coalesce(string_agg(
        CASE
            WHEN m.t[1] = '*' THEN '.*'
            WHEN m.t[1] = '?' THEN '.'
            WHEN m.t[1] LIKE '[%' THEN replace(m.t[1], '\', '\\')
            ELSE regexp_replace(m.t[1], '([^A-Za-z0-9_])', '\\\1', 'g')
        END, '' ORDER BY m.n), '') || '$'
    FROM regexp_matches(pattern, '(\[\^?\]?[^]]*\]|.)', 'g') WITH ORDINALITY AS m(t, n)
$$;

CREATE FUNCTION mirrorsync_glob(value TEXT, pattern TEXT) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT value ~ mirrorsync_glob_regex(pattern) $$;
