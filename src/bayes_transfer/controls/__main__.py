"""``python -m bayes_transfer.controls``: both controls, measured (:mod:`bayes_transfer.controls.standalone`)."""

import sys

from bayes_transfer.controls.standalone import main

sys.exit(main())
