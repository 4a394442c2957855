"""``python -m mnerqg_graph``: the ``mnerqg`` command line (see :mod:`mnerqg_graph.cli`)."""

import sys

from mnerqg_graph.cli import main

if __name__ == "__main__":
    sys.exit(main())
