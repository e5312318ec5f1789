-- A membership on PostgreSQL cost a heap row (24-byte header, 4-byte line
-- pointer, 16 bytes of columns), a primary-key entry and an entry of
-- memberships_by_spec: 104 bytes, where SQLite stores the key alone (issue 31:
-- the database after a first sync was 1.77x SQLite's). The memberships of a
-- stack that entered at one version and left at one version (or are still held)
-- are one row, their spec ids one sorted array: a stack's first sync is one row,
-- each later version adds one, and the specs it removes split their rows.
--
-- * `memberships` is a view with the same columns and rows as the table was
--   (one row per membership), so every query reads what it read before, and
--   `events` (derived from it since 0012) is unchanged.
-- * The store writes the groups: a version's new memberships as one row
--   (bulk.open_memberships); closing memberships moves their ids out of the
--   open rows into rows that left at that version, all in one call of
--   mirrorsync_close_memberships, the only writer of `left`.
-- * 0013's checks move to the groups: a spec id or stack id naming nothing
--   stored is refused (SQLSTATE 23503), and so is deleting, truncating or
--   renumbering a spec or stack a group names; a group's stack never changes
--   and its ids only leave (an update adding one is refused). The old primary
--   key holds too: a stack's groups of one entered version hold a spec once
--   (23505).
-- * Lookups by stack read the stack's few rows through their index; lookups by
--   spec (a spec's history, a package's pages) read every group's ids: the
--   index by spec cost more than the table now does.

DROP VIEW events;

-- Ascending, each once, no NULL: lookups of one id search a row's array by halves
-- (width_bucket), and a page of a stack's members slices each row's array.
CREATE FUNCTION mirrorsync_ascending(ids integer[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE STRICT
    AS 'SELECT array_position(ids, NULL) IS NULL
        AND ids = ARRAY(SELECT DISTINCT u.id FROM unnest(ids) AS u(id) ORDER BY u.id)';

CREATE TABLE membership_groups (
    stack_id INTEGER NOT NULL,
    entered  INTEGER NOT NULL,     -- first stack version that holds these specs
    "left"   INTEGER,              -- first version that no longer does; NULL while held
    spec_ids INTEGER[] NOT NULL    -- never empty
        CHECK (cardinality(spec_ids) > 0 AND mirrorsync_ascending(spec_ids))
);
INSERT INTO membership_groups (stack_id, entered, "left", spec_ids)
    SELECT stack_id, entered, "left", array_agg(spec_id ORDER BY spec_id)
    FROM memberships GROUP BY stack_id, entered, "left" ORDER BY stack_id, entered;
CREATE INDEX membership_groups_by_stack ON membership_groups (stack_id, entered);
DROP TABLE memberships;
DROP FUNCTION mirrorsync_memberships_added();
DROP FUNCTION mirrorsync_memberships_fixed();

CREATE VIEW memberships AS
    SELECT g.stack_id, m.spec_id, g.entered, g."left"
    FROM membership_groups g CROSS JOIN LATERAL unnest(g.spec_ids) AS m(spec_id);

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

CREATE FUNCTION mirrorsync_groups_added() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM added a CROSS JOIN LATERAL unnest(a.spec_ids) AS x(id)
            WHERE NOT EXISTS (SELECT 1 FROM specs s WHERE s.id = x.id)) THEN
        RAISE EXCEPTION ''insert into membership_groups: a spec id names no stored spec''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    IF EXISTS (SELECT 1 FROM added a WHERE NOT EXISTS (SELECT 1 FROM stacks s WHERE s.id = a.stack_id)) THEN
        RAISE EXCEPTION ''insert into membership_groups: a stack_id names no stored stack''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    -- The old primary key (stack_id, spec_id, entered): the groups of one stack and
    -- version hold each spec once (a split moves ids, never copies them).
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT stack_id, entered FROM added) k
            JOIN membership_groups g ON g.stack_id = k.stack_id AND g.entered = k.entered
            CROSS JOIN LATERAL unnest(g.spec_ids) AS x(id)
            GROUP BY k.stack_id, k.entered, x.id HAVING count(*) > 1) THEN
        RAISE EXCEPTION ''insert into membership_groups: a stack holds a spec twice from one version''
            USING ERRCODE = ''unique_violation'';
    END IF;
    RETURN NULL;
END';

CREATE FUNCTION mirrorsync_groups_fixed() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF OLD.stack_id IS DISTINCT FROM NEW.stack_id THEN
        RAISE EXCEPTION ''update of membership_groups: a membership''''s stack never changes''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    IF NEW.spec_ids IS DISTINCT FROM OLD.spec_ids
        AND EXISTS (SELECT unnest(NEW.spec_ids) EXCEPT SELECT unnest(OLD.spec_ids)) THEN
        RAISE EXCEPTION ''update of membership_groups: a membership''''s spec never changes''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NEW;
END';

CREATE OR REPLACE FUNCTION mirrorsync_specs_gone() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM membership_groups m CROSS JOIN LATERAL unnest(m.spec_ids) AS x(id)
            JOIN gone g ON g.id = x.id) THEN
        RAISE EXCEPTION ''delete from specs: a membership still names the spec''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

CREATE OR REPLACE FUNCTION mirrorsync_stacks_gone() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM gone g JOIN membership_groups m ON m.stack_id = g.id) THEN
        RAISE EXCEPTION ''delete from stacks: a membership still names the stack''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

CREATE OR REPLACE FUNCTION mirrorsync_renumbered() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF (TG_TABLE_NAME = ''specs''
            AND EXISTS (SELECT 1 FROM membership_groups m WHERE OLD.id = ANY (m.spec_ids)))
        OR (TG_TABLE_NAME = ''stacks''
            AND EXISTS (SELECT 1 FROM membership_groups m WHERE m.stack_id = OLD.id)) THEN
        RAISE EXCEPTION ''update of %: a membership still names id %'', TG_TABLE_NAME, OLD.id
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NEW;
END';

CREATE OR REPLACE FUNCTION mirrorsync_truncated() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM membership_groups) THEN
        RAISE EXCEPTION ''truncate %: memberships still name its rows'', TG_TABLE_NAME
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

-- Close the stack's open memberships of the specs ``gone`` at ``at_version``; how many
-- it closed. A row all of whose specs go is closed whole; any other loses them
-- to a new row, closed.
CREATE FUNCTION mirrorsync_close_memberships(in_stack integer, at_version integer, gone integer[])
RETURNS bigint LANGUAGE plpgsql AS '
DECLARE
    g record;
    kept integer[];
    closed integer[];
    total bigint := 0;
BEGIN
    FOR g IN SELECT m.ctid AS tid, m.entered, m.spec_ids FROM membership_groups m
        WHERE m.stack_id = in_stack AND m."left" IS NULL ORDER BY m.entered FOR UPDATE
    LOOP
        SELECT coalesce(array_agg(t.id ORDER BY t.id) FILTER (WHERE NOT t.hit), ''{}''),
            coalesce(array_agg(t.id ORDER BY t.id) FILTER (WHERE t.hit), ''{}'')
        INTO kept, closed
        FROM (SELECT x.id, x.id IN (SELECT unnest(gone)) AS hit
            FROM unnest(g.spec_ids) AS x(id)) t;
        CONTINUE WHEN cardinality(closed) = 0;
        IF cardinality(kept) = 0 THEN
            UPDATE membership_groups SET "left" = at_version WHERE ctid = g.tid;
        ELSE
            UPDATE membership_groups SET spec_ids = kept WHERE ctid = g.tid;
            INSERT INTO membership_groups (stack_id, entered, "left", spec_ids)
                VALUES (in_stack, g.entered, at_version, closed);
        END IF;
        total := total + cardinality(closed);
    END LOOP;
    RETURN total;
END';

-- (CREATE TRIGGER inside DO: the store cuts a migration into statements as SQLite
-- reads them, and SQLite would want its own trigger's END.)
DO 'BEGIN
    CREATE TRIGGER membership_groups_added AFTER INSERT ON membership_groups
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT
        EXECUTE FUNCTION mirrorsync_groups_added();
    CREATE TRIGGER membership_groups_fixed BEFORE UPDATE OF stack_id, spec_ids
        ON membership_groups FOR EACH ROW EXECUTE FUNCTION mirrorsync_groups_fixed();
END';
