from deeptut.cli import main

raise SystemExit(main())
