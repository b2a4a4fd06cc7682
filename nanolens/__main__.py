from nanolens.cli import main

raise SystemExit(main())
