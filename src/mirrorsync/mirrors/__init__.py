"""Local copies of build caches: filtered, verified, incremental, never half-published.

``plan`` chooses what a copy holds, ``download`` brings it in checked,
``publish`` writes the index last and deletes last and late, ``run`` does
all of it for every configured copy.
"""

from mirrorsync.mirrors.run import MirrorOutcome, run_mirrors

__all__ = ["MirrorOutcome", "run_mirrors"]
