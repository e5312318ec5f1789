-- 0015 kept the old primary key (stack_id, spec_id, entered) of the memberships as
-- a check when groups are inserted (23505): a stack's groups of one entered version
-- hold each spec once. An update of a group's `entered` went unchecked, so moving a
-- group onto a version whose groups hold one of its specs made that membership
-- twice. The store never changes `entered` (it writes `left`, and moves ids out of
-- open rows); any other writer is now held to the key on an update too, as the
-- table was: moving a group to a version none of its specs holds stays allowed.

CREATE OR REPLACE FUNCTION mirrorsync_groups_fixed() RETURNS trigger LANGUAGE plpgsql AS '
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
    IF NEW.entered IS DISTINCT FROM OLD.entered
        AND EXISTS (SELECT 1 FROM membership_groups g CROSS JOIN LATERAL unnest(g.spec_ids) AS x(id)
            WHERE g.stack_id = NEW.stack_id AND g.entered = NEW.entered AND g.ctid <> OLD.ctid
            AND x.id = ANY (NEW.spec_ids)) THEN
        RAISE EXCEPTION ''update of membership_groups: a stack holds a spec twice from one version''
            USING ERRCODE = ''unique_violation'';
    END IF;
    RETURN NEW;
END';

-- (CREATE TRIGGER inside DO: the store cuts a migration into statements as SQLite
-- reads them, and SQLite would want its own trigger's END.)
DO 'BEGIN
    DROP TRIGGER membership_groups_fixed ON membership_groups;
    CREATE TRIGGER membership_groups_fixed BEFORE UPDATE OF stack_id, entered, spec_ids
        ON membership_groups FOR EACH ROW EXECUTE FUNCTION mirrorsync_groups_fixed();
END';
