"""``python -m bertbusters_nb.pretraining`` (see ``pretraining.cli``; also under ``accelerate launch -m``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
