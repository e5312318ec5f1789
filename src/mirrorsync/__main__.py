from mirrorsync.cli import main

raise SystemExit(main())
