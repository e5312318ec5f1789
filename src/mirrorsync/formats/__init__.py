"""Pure parsers: bytes in, typed records out. No I/O happens in this package.

Every parser raises :class:`mirrorsync.errors.FormatError` and nothing else on
bad input, so callers can name the offending URL and refuse the document.
"""
