"""``python -m bertbusters_nb.finetuning`` (see ``finetuning.cli``; also under ``accelerate launch -m``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
