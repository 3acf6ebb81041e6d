"""``python -m ssamba_training.synth --out DIR ...``: see :mod:`ssamba_training.synth.cli`."""

import sys

from .cli import main

sys.exit(main())
