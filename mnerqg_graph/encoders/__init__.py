"""Text encoders. Submodules import torch/transformers; this package itself imports nothing heavy.

- :mod:`mnerqg_graph.encoders.tiny`: a tiny random BERT written as a local model directory.
"""
