-- Compilers are stored as Spack 1.x prints them, "gcc@13.2.0" (FORMATS.md
-- sections 4 and 5); rows written before were "gcc@=13.2.0".
UPDATE specs SET compiler = replace(compiler, '@=', '@') WHERE instr(compiler, '@=') > 0;
