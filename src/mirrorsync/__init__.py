"""mirrorsync: keep versioned history of Spack binary build caches and announce changes."""

__version__ = "0.1.0"

import sys

# httpx's package imports its own command line (``httpx._main``: click, pygments,
# rich's syntax highlighting and tables) whenever click is installed: ~40 ms of CPU
# at every start of a command that fetches, for code mirrorsync never runs. None in
# ``sys.modules`` makes that one import fail at once (Python's documented way), and
# httpx defines its stub ``main`` instead (README, "Performance", issue 31: copy).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
