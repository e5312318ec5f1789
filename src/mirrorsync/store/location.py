"""Where the history lives (``mirrorsync.location``, below the configuration that
names it), under the store's name as before."""

from mirrorsync.location import Location as Location
from mirrorsync.location import PostgresUrl as PostgresUrl
from mirrorsync.location import is_postgres_url as is_postgres_url
