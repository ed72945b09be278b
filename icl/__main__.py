from icl.cli import main

raise SystemExit(main())
