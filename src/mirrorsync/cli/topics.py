"""Help beyond one command's options: ``mirrorsync help TOPIC``, the ``--help``
epilog (examples and exit codes) and ``mirrorsync config init``'s starter file.

One source of text: ``--help`` and ``help exit-codes`` print the same table, and
``help config`` shows the same starter that ``config init`` writes.
"""

from __future__ import annotations

from mirrorsync.errors import (
    EXIT_DAMAGED,
    EXIT_LOCKED,
    EXIT_NO_DATABASE,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_TARGET_NOT_EMPTY,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

EXAMPLES = """\
examples:
  mirrorsync config init mirrorsync.yaml   write a commented starter configuration
  mirrorsync config check                  try it: database, directories, sources
  mirrorsync once                          sync every source once
  mirrorsync status                        version, size and health of every stack
  mirrorsync events --since 2026-12-01     what changed since a date
  mirrorsync diff --release develop --stack e4s 1 2
  mirrorsync demo                          an offline tour on a bundled mirror
  mirrorsync help TOPIC                    topics: {topics}
"""

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK:<3} success (also when stdout's reader went away: mirrorsync events | head)
  {EXIT_PARTIAL:<3} something failed and is named on stderr: a stack, source, copy,
      a check (verify, status --check), a delivery, a server refusing our login
  {EXIT_USAGE:<3} configuration or usage error: a bad or missing configuration, bad
      arguments, a name that matches nothing known
  {EXIT_DAMAGED:<3} the database cannot be used as it is (damaged, or a schema
      older or newer than this mirrorsync); bundle import: the bundle is refused
      (damaged, tampered with, untrusted signature, a gap or out of order)
  {EXIT_NO_DATABASE:<3} no database yet: run 'mirrorsync once' first
  {EXIT_UNAVAILABLE:<3} the PostgreSQL server cannot be reached or is not accepting connections
  {EXIT_TARGET_NOT_EMPTY:<3} db migrate-to: the target already holds a mirrorsync history
  {EXIT_LOCKED:<3} another run holds the lock (--wait SECONDS waits for it)
  130, 143, 129  ended by SIGINT, SIGTERM or SIGHUP (128 + the signal)
"""

#: ``config init``'s starter: every line the parser reads, the rest commented.
STARTER_CONFIG = """\
# mirrorsync configuration (README, "Configuration"). Check it with:
#   mirrorsync -c THIS_FILE config check

# Where the history is kept: a SQLite file (created at the first 'once'),
# or postgresql://USER@HOST:PORT/DBNAME. Under systemd (StateDirectory=mirrorsync):
# /var/lib/mirrorsync/mirrorsync.db
database: ./mirrorsync.db

# What to keep the history of: one or more sources.
sources:
  - name: spack-public
    kind: catalog                  # catalog | mirror | pages
    url: https://binaries.spack.io/cache_spack_io_index.json
    releases: ["develop"]          # globs; leave out for every release
    # stacks: ["e4s", "ml-*"]      # globs; leave out for every stack
    # exclude_stacks: []
    manifests: none                # spec manifests (sizes, checksums): new | all | none
  # - name: site
  #   kind: mirror                 # one mirror root (v3 or v2 layout, detected)
  #   url: https://mirror.example.org/spack      # or file:///srv/spack-mirror
  #   release: local
  #   stack: root

# Local copies of the binaries, made by 'mirrorsync mirror' (README, "Mirrors").
# mirrors:
#   - name: site-cache
#     path: /srv/spack-cache       # becomes a v3 build cache
#     source: spack-public
#     release: develop             # required for a catalog source
#     stacks: ["e4s"]              # globs
#     packages: ["py-*", "hdf5"]   # globs on spec names
#     delete_after: 2d

# Endpoints that receive change events in signed batches (README, "Webhooks").
# webhooks:
#   - name: team-chat
#     url: https://hooks.example.org/spack
#     secret_env: MIRRORSYNC_HOOK_SECRET   # a whsec_... secret
#     events: [spec.removed]               # default: every type
#     # format: slack   # or discord, teams, matrix, ntfy, cloudevents: a summary, no secret
#     #                 # needed (README, "Notifications"); ed25519_key_file: v1a signatures

# Prometheus metrics for node_exporter's textfile collector (README, "Metrics").
# metrics:
#   textfile: /var/lib/node_exporter/textfile_collector/mirrorsync.prom

# http:
#   concurrency: 16                # requests in flight, all hosts
#   per_host_rate: 20              # requests per second per host
#   timeout: 30s
"""

TOPICS: dict[str, str] = {
    "config": (
        "The configuration file: -c PATH, else $MIRRORSYNC_CONFIG, ./mirrorsync.yaml,\n"
        "/etc/mirrorsync/mirrorsync.yaml. YAML; unknown keys are errors. Top-level keys:\n"
        "  sources    (required) what to keep the history of: kind catalog, mirror or pages\n"
        "  database   a SQLite file (default ./mirrorsync.db, $STATE_DIRECTORY under\n"
        "             systemd) or postgresql://USER@HOST:PORT/DBNAME\n"
        "  mirrors    local copies of the binaries ('mirrorsync mirror')\n"
        "  webhooks   endpoints that receive change events\n"
        "  metrics    a node_exporter textfile\n"
        "  http       concurrency, rates, timeouts, retries, proxy\n"
        "  limits     the largest document of each kind read\n"
        "'mirrorsync config init PATH' writes this starter; 'mirrorsync config check'\n"
        'tries a file. The README\'s "Configuration" section has every key.\n'
        "status keeps what it reads of the file in $XDG_CACHE_HOME/mirrorsync (else\n"
        "~/.cache/mirrorsync), used while the file and what it names are unchanged;\n"
        "MIRRORSYNC_NO_CACHE=1 turns that off.\n\n" + STARTER_CONFIG
    ),
    "exit-codes": EXIT_CODES,
    "events": (
        "Each sync of a stack whose set of hashes changed makes a new numbered version\n"
        "and records, in the same transaction, one event per change:\n"
        "  spec.added / spec.removed        a hash entered or left a (source, release, stack)\n"
        "  stack.added / stack.removed      a stack's first sync / the catalogue dropped it\n"
        "  release.added / release.removed  a release appeared in / left the catalogue\n"
        "  spec.manifest_missing            an indexed hash whose spec manifest is missing\n"
        "  mirror.updated                   a local copy published a new index\n"
        "Ids increase: 'mirrorsync events --since ID' resumes where a consumer stopped;\n"
        "--json prints one object per line. Webhooks receive the same events.\n"
    ),
    "copies": (
        "A mirrors: entry keeps a directory that is a complete v3 build cache made from\n"
        "synced stacks, filtered (stacks, packages, os, targets, platforms globs;\n"
        "environments and hashes keeplists), updated incrementally and never\n"
        "half-published. 'mirrorsync mirror' brings every copy up to the synced state\n"
        "('once' does too, after syncing); 'mirror --dry-run' shows what would be\n"
        "downloaded and deleted; 'verify --mirror NAME' checks a copy on disk\n"
        "('--repair' fixes it); 'forget mirror NAME' ends the listing of one removed\n"
        "from the configuration (its history stays). Spack reads it as a mirror:\n"
        "  spack mirror add site file:///srv/spack-cache\n\n"
        "mirrors:\n"
        "  - name: site-cache\n"
        "    path: /srv/spack-cache\n"
        "    source: spack-public\n"
        "    release: develop\n"
        "    stacks: [e4s]\n"
    ),
}


def epilog() -> str:
    """The top-level ``--help``'s closing text: examples, then the exit codes."""
    return EXAMPLES.format(topics=", ".join(TOPICS)) + "\n" + EXIT_CODES
