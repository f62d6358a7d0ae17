from mnist_sweep.cli import main

raise SystemExit(main())
