
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
