"""The ``grounding`` ingredient: where the grounding head's supervision comes from."""

from __future__ import annotations

from sacred import Ingredient

grounding_ingredient = Ingredient("grounding")


@grounding_ingredient.config
def grounding_config() -> None:
    """Defaults: every gold box of the training split is used."""
    manual_fraction = 1.0  # share of training tweets whose gold (manual) boxes are kept
    weak_dir = None  # folder of weak VOC labels (mnerqg pseudo-label) for the other tweets
    weak_threshold = 0.5  # weak boxes under this confidence are not used
