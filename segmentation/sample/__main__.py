from segmentation.sample.generate import main

raise SystemExit(main())
