"""Sacred experiments of mnerqg-graph (the only place, with the CLI, that reads configuration).

Importing this package hides one warning: the ``pkg_resources`` deprecation that sacred 0.8.7's
import raises (setuptools is pinned below 81, which still has ``pkg_resources``; pyproject.toml).
The filter matches that message, category and importing module (``sacred.*``) only.
"""

import warnings

warnings.filterwarnings(
    "ignore",
    message=r"pkg_resources is deprecated as an API",
    category=UserWarning,
    module=r"sacred(\.|$)",
)
