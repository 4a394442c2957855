"""The ``data`` ingredient: which data set, where, and how it is read."""

from __future__ import annotations

from sacred import Ingredient

data_ingredient = Ingredient("data")


@data_ingredient.config
def data_config() -> None:
    """Defaults: SynthTweets, generated under ``data/synth`` when absent."""
    name = "synthetic"  # synthetic | twitter2015 | twitter2017 | folder (any data-set folder)
    root = "data/synth"  # data-set folder: {train,valid,test}.txt [+ images/ boxes/]
    images_dir = None  # override of ROOT/images (real tweet images live elsewhere)
    boxes_dir = None  # override of ROOT/boxes
    use_images = True  # False: ignore images even when present
    queries = None  # a JSON query file, or a packaged one by name (default | short | words)
    limit = None  # keep only the first N tweets of each split (smoke runs)
    region_cache = None  # mnerqg extract-regions folder: region features read, no image decoded
    synth = {"seed": 0, "train": 2000, "valid": 400, "test": 400}  # generator sizes when absent
