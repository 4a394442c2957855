"""The heterogeneous graph of MNER-QG: schema and vectorised batch construction.

Importing this package imports PyTorch Geometric (:mod:`mnerqg_graph.fusion` imports this package
first), without the ``torch.jit.script`` FutureWarning that torch >= 2.10 raises when PyG scripts
two classes of its own at import (PyG 2.8): a warning its users cannot act on, printed by every
command. Only that warning and only during that import is silenced; ``torch.jit.script`` calls
made later, by anyone, still warn.
"""

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message=r"`torch\.jit\.script` is (deprecated|not supported)",
        category=FutureWarning,
    )
    import torch_geometric  # noqa: F401
