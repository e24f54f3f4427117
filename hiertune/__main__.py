from hiertune.cli import main

raise SystemExit(main())
