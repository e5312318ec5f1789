"""mirrorsync: keep versioned history of Spack binary build caches and announce changes."""

__version__ = "0.1.0"
