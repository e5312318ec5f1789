-- As 0004_compiler_text.sql, with PostgreSQL's strpos for SQLite's instr.
UPDATE specs SET compiler = replace(compiler, '@=', '@') WHERE strpos(compiler, '@=') > 0;
