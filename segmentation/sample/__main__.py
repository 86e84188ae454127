from segmentation.sample.cli import main

raise SystemExit(main())
