"""The ``model`` ingredient: the fields of :class:`mnerqg_graph.config.ModelConfig`, the encoder.

The defaults are :class:`~mnerqg_graph.config.ModelConfig`'s own (:mod:`.defaults`): change them
there. Only the keys the library has no field for live here: ``text_encoder`` names an encoder the
experiment resolves (``tiny`` is built from the training text, with the sizes in ``tiny``).
"""

from __future__ import annotations

from sacred import Ingredient

from experiments.ingredients.defaults import dataclass_defaults
from mnerqg_graph.config import ModelConfig

model_ingredient = Ingredient("model")


@model_ingredient.config
def model_config() -> None:
    """The SynthTweets demo model: a tiny random-initialised BERT, the small CNN."""
    text_encoder = "tiny"  # tiny | minilm | PATH of a local Hugging Face model
    tiny = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}  # of tiny


# every ModelConfig field but the two the experiment fills in (types: the query file's)
model_ingredient.configurations.append(
    dataclass_defaults(ModelConfig, exclude=("types", "text_encoder"), types=[], text_encoder="")
)
