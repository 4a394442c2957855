"""The ``optim`` ingredient: the fields of :class:`mnerqg_graph.training.loop.TrainConfig`.

The defaults are :class:`~mnerqg_graph.training.loop.TrainConfig`'s own (:mod:`.defaults`), sized
for the SynthTweets demo on a 2-core CPU: change them there. ``seed`` is the experiment's.
"""

from __future__ import annotations

from sacred import Ingredient

from experiments.ingredients.defaults import dataclass_defaults
from mnerqg_graph.training.loop import TrainConfig

optim_ingredient = Ingredient("optim")
optim_ingredient.configurations.append(dataclass_defaults(TrainConfig, exclude=("seed",)))
