from mirrorsync.cli import entry

entry()
