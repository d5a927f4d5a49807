from hookformer.core.cli import main

raise SystemExit(main())
