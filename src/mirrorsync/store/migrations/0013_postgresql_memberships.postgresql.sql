-- A first sync writes one membership per spec of every stack; on PostgreSQL each
-- cost a heap row (24-byte header), three index entries and two foreign-key
-- checks, each check a query of its own per row (EXPLAIN ANALYZE: about two
-- thirds of the time spent writing memberships). Measured (issue 31), so:
--
-- * The references to stacks and specs are checked once per statement, over all
--   the rows it wrote (triggers on transition tables, one anti-join each), not per
--   row. What the foreign keys refused is still refused, with the same SQLSTATE
--   (23503): a membership naming a spec or stack that is not stored; deleting,
--   truncating or renumbering a spec or stack that a membership names; and a
--   membership's stack and spec never change (the store never sets them). The
--   store never deletes a spec or a stack at all, and writes a membership only in
--   the transaction that read or inserted its spec and locked its stack.
-- * memberships_current goes: every query of current memberships names the stack,
--   and the primary key (stack_id, spec_id, entered) finds those rows as fast
--   (SQLite keeps its partial index: there it is what avoids a table scan).
-- * Its columns are 32-bit: ids and versions stay far below 2**31, and a row is
--   16 bytes narrower (8 in the heap, 8 in the primary key).
-- * Its primary key and that of specs fill their pages: rows arrive in key order
--   (a stack's memberships by spec id, new specs by id), so the 10% a B-tree
--   leaves free for inserts in between would stay free.

DROP VIEW events;
DROP INDEX memberships_current;
ALTER INDEX memberships_pkey SET (fillfactor = 100);
ALTER INDEX specs_pkey SET (fillfactor = 100);
ALTER TABLE memberships DROP CONSTRAINT IF EXISTS memberships_stack_id_fkey;
ALTER TABLE memberships DROP CONSTRAINT IF EXISTS memberships_spec_id_fkey;
ALTER TABLE memberships ALTER COLUMN stack_id TYPE INTEGER, ALTER COLUMN spec_id TYPE INTEGER,
    ALTER COLUMN entered TYPE INTEGER, ALTER COLUMN left TYPE INTEGER;

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

CREATE FUNCTION mirrorsync_memberships_added() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM added a WHERE NOT EXISTS (SELECT 1 FROM specs s WHERE s.id = a.spec_id)) THEN
        RAISE EXCEPTION ''insert into memberships: a spec_id names no stored spec''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    IF EXISTS (SELECT 1 FROM added a WHERE NOT EXISTS (SELECT 1 FROM stacks s WHERE s.id = a.stack_id)) THEN
        RAISE EXCEPTION ''insert into memberships: a stack_id names no stored stack''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

CREATE FUNCTION mirrorsync_memberships_fixed() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    RAISE EXCEPTION ''update of memberships: a membership''''s stack and spec never change''
        USING ERRCODE = ''foreign_key_violation'';
END';

CREATE FUNCTION mirrorsync_specs_gone() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM gone g JOIN memberships m ON m.spec_id = g.id) THEN
        RAISE EXCEPTION ''delete from specs: a membership still names the spec''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

CREATE FUNCTION mirrorsync_stacks_gone() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM gone g JOIN memberships m ON m.stack_id = g.id) THEN
        RAISE EXCEPTION ''delete from stacks: a membership still names the stack''
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

CREATE FUNCTION mirrorsync_renumbered() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM memberships m WHERE
        CASE TG_TABLE_NAME WHEN ''specs'' THEN m.spec_id ELSE m.stack_id END = OLD.id) THEN
        RAISE EXCEPTION ''update of %: a membership still names id %'', TG_TABLE_NAME, OLD.id
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NEW;
END';

CREATE FUNCTION mirrorsync_truncated() RETURNS trigger LANGUAGE plpgsql AS '
BEGIN
    IF EXISTS (SELECT 1 FROM memberships) THEN
        RAISE EXCEPTION ''truncate %: memberships still name its rows'', TG_TABLE_NAME
            USING ERRCODE = ''foreign_key_violation'';
    END IF;
    RETURN NULL;
END';

-- (CREATE TRIGGER inside DO: the store cuts a migration into statements as SQLite
-- reads them, and SQLite would want its own trigger's END.)
DO 'BEGIN
    CREATE TRIGGER memberships_added AFTER INSERT ON memberships
        REFERENCING NEW TABLE AS added FOR EACH STATEMENT
        EXECUTE FUNCTION mirrorsync_memberships_added();
    CREATE TRIGGER memberships_fixed BEFORE UPDATE OF stack_id, spec_id ON memberships
        FOR EACH ROW WHEN (OLD.stack_id IS DISTINCT FROM NEW.stack_id
            OR OLD.spec_id IS DISTINCT FROM NEW.spec_id)
        EXECUTE FUNCTION mirrorsync_memberships_fixed();
    CREATE TRIGGER specs_gone AFTER DELETE ON specs
        REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
        EXECUTE FUNCTION mirrorsync_specs_gone();
    CREATE TRIGGER stacks_gone AFTER DELETE ON stacks
        REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
        EXECUTE FUNCTION mirrorsync_stacks_gone();
    CREATE TRIGGER specs_renumbered BEFORE UPDATE OF id ON specs
        FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
        EXECUTE FUNCTION mirrorsync_renumbered();
    CREATE TRIGGER stacks_renumbered BEFORE UPDATE OF id ON stacks
        FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
        EXECUTE FUNCTION mirrorsync_renumbered();
    CREATE TRIGGER specs_truncated BEFORE TRUNCATE ON specs
        FOR EACH STATEMENT EXECUTE FUNCTION mirrorsync_truncated();
    CREATE TRIGGER stacks_truncated BEFORE TRUNCATE ON stacks
        FOR EACH STATEMENT EXECUTE FUNCTION mirrorsync_truncated();
END';
