"""Text and image encoders. Submodules import torch and transformers; this package imports nothing.

- :mod:`mnerqg_graph.encoders.text`: the text encoders (``TEXT_ENCODER_REGISTRY``).
- :mod:`mnerqg_graph.encoders.image`: the image backbones (``BACKBONE_REGISTRY``).
- :mod:`mnerqg_graph.encoders.tiny`: a tiny random BERT written as a local model directory.
"""
