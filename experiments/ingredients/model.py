"""The ``model`` ingredient: the sections of :class:`mnerqg_graph.config.ModelConfig`.

The defaults are :class:`~mnerqg_graph.config.ModelConfig`'s own (:mod:`.defaults`): change them
there (``model.encoder.name``, ``model.heads.tag_head``, ...). ``encoder.name`` names an encoder
the experiment resolves (``tiny`` is built from the training text, with the sizes in ``tiny``, the
one key the library has no field for).
"""

from __future__ import annotations

from sacred import Ingredient

from experiments.ingredients.defaults import dataclass_defaults
from mnerqg_graph.config import ModelConfig

model_ingredient = Ingredient("model")


@model_ingredient.config
def model_config() -> None:
    """The SynthTweets demo model: a tiny random-initialised BERT, the small CNN."""
    tiny = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}  # of tiny


# every ModelConfig section, but the types (the query file's); the experiment resolves
# encoder.name: tiny (built from the training text with the sizes in ``tiny``), minilm, or a path
model_ingredient.configurations.append(
    dataclass_defaults(
        ModelConfig,
        exclude=("types",),
        docs={"encoder.name": "tiny | minilm | PATH of a local Hugging Face model"},
        types=[],
        encoder={"name": "tiny"},
    )
)
