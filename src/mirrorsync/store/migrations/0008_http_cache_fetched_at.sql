-- When each cached document was last fetched in full (a 200), ISO 8601 UTC, so
-- http.revalidate_after can ask for it without conditions once that is too long
-- ago (a server whose validators lie would otherwise hide a change for good).
-- NULL for rows cached before this migration: their next request is unconditional.
ALTER TABLE http_cache ADD COLUMN fetched_at TEXT;
