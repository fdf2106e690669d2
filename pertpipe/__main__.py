from pertpipe.cli import main

raise SystemExit(main())
