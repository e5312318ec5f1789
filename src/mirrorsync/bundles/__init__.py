"""Bundles of a copy for sites with no network: export, carry, import, verified.

``manifest`` is the format (pure), ``tarvol`` writes and reads tar volumes as
streams, ``state`` lists a published state's files, ``export`` and ``import_`` make
and publish bundles, ``reader`` opens one and refuses what its manifest does not list.
"""
