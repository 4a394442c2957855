"""``python -m benchmarks.throughput`` from a checkout: :mod:`mnerqg_graph.bench.throughput`.

The benchmark is installed with the package (``mnerqg bench``); this module only keeps the
checkout's command working.
"""

import sys

from mnerqg_graph.bench.throughput import main

if __name__ == "__main__":
    sys.exit(main())
