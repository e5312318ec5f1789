"""``mirrorsync serve``: a read-only web view of the history, with feeds and metrics.

It sits on top, beside the CLI: it reads the store (``store.queries``,
``store.web``) and the one health model (``mirrorsync.health``) and never writes.
The database is opened read-only (SQLite ``mode=ro``, or ``immutable=1`` where
its directory cannot hold the -wal/-shm files; PostgreSQL in read-only
transactions), so it works on a database its user may only read.

Modules: ``app`` (the aiohttp application, its guards and its one store),
``pages`` (HTML), ``api`` (JSON under ``/api/``), ``feeds`` (Atom, JSON Feed),
``ops`` (``/metrics``, ``/healthz``), ``chart`` (the server-made SVG),
``links`` (every URL a page names, built in one place).
"""

from mirrorsync.serve.app import make_app, serve
from mirrorsync.serve.state import DEFAULT_LISTEN, parse_listen

__all__ = ["DEFAULT_LISTEN", "make_app", "parse_listen", "serve"]
