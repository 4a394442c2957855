"""The configuration dataclasses: the one source of every default.

:class:`ModelConfig` holds everything needed to rebuild a model (saved as a checkpoint's
``config.json``); :class:`TrainConfig` the optimisation settings. Only the edges (the Sacred
experiment, the CLI) turn user config into them; the library's constructors take typed arguments.
The Sacred ingredients ``model`` and ``optim`` take their defaults from these classes
(``experiments/ingredients/defaults.py``), so a default is changed here and only here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnerqg_graph.data.mrc import PACKED_POSITIONS, QUERY_ENCODINGS
from mnerqg_graph.errors import ConfigError, MnerqgError

#: JSON value kinds accepted per annotation (the first one builds a placeholder default).
_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "list": (list, tuple),
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "dict": (dict,),
}

#: Attention inside a packed sequence: every piece sees every piece, or a query sees only itself,
#: ``[CLS]`` and the tweet (the tweet and ``[CLS]`` see everything).
PACKED_ATTENTION = ("full", "isolated")

#: The built-in decoders (:data:`mnerqg_graph.decoding.DECODER_REGISTRY` holds them and plugins'):
#: the MRC span heads, or the auxiliary BIO tagger (``tag_head``).
DECODERS = ("span", "tags")


def default_loss_weights() -> dict[str, float]:
    """The weight of each loss part (every part there is; ``tags`` acts with ``tag_head``)."""
    return {
        "start": 1.0,
        "end": 1.0,
        "match": 1.0,
        "existence": 0.5,
        "grounding": 1.0,
        "tags": 1.0,
    }


def default_fusion_kwargs() -> dict[str, Any]:
    """Options of the default fusion module (``hetero_gat``): 4 attention heads."""
    return {"heads": 4}


def default_backbone_kwargs() -> dict[str, Any]:
    """Options of the default backbone (``small_cnn``): 64 px images give 2x2, 4x4, 8x8 cells."""
    return {"width": 16, "out_channels": 64, "min_stride": 8}


#: Bumped when the saved config or weights layout changes incompatibly.
CONFIG_VERSION = 1


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`mnerqg_graph.model.MnerqgModel`.

    Args:
        types: entity types, in query order.
        text_encoder: local Hugging Face model directory (a checkpoint stores its own copy).
        fusion: registered fusion module name (``hetero_gat``, ``none``, ...).
        fusion_layers: number of fusion layers (one hop already joins every token to every
            region).
        fusion_kwargs: module-specific options of ``fusion``; the default (``{"heads": 4}``)
            suits the built-in attention modules: set it with ``fusion``.
        hidden_dim: node feature size after fusion.
        use_image: build the image branch (False: text-only graph of token and query nodes).
        backbone: registered image backbone name.
        backbone_kwargs: options of ``backbone``; the default (``{"width": 16, "out_channels":
            64, "min_stride": 8}``) is ``small_cnn``'s: set it with ``backbone``.
        image_size: side of the square image fed to the backbone, in pixels.
        num_scales: region scales used, coarsest first (1 = only the coarsest).
        token_window: token-token edges join tokens at most this far apart.
        existence_gating: gate unimodal messages by the existence probability.
        casing_dim: size of the token casing/shape embedding (0: off).
        max_span_len: longest span scored, in tokens.
        tag_head: add the auxiliary BIO tagger over all types on the token nodes, trained with the
            loss weight ``tags`` (its features are shared with the span heads; see ``decoder``).
        tag_crf: a linear-chain CRF over the tagger's BIO tags (needs ``tag_head``): its loss is
            the gold sequence's negative log-likelihood and the ``tags`` decoder reads the best
            sequence (Viterbi) under the BIO constraints.
        head_dim: hidden width of the span heads' and the tagger's MLPs (0: their input width,
            the fused token features plus the token's own). They run on every token of every
            (tweet, type) example: a narrower width cuts most of what the heads cost.
        url_word: the text encoder reads this word in place of every URL token (``""``: URLs as
            they are). A ``t.co`` URL is 15-20 random word pieces; the token itself (label, shape
            feature, output) is kept.
        max_length: word pieces per ``[CLS] query [SEP] tweet [SEP]`` sequence; with ``packed``
            queries the tweet gets the same budget (the sequence is longer by the other queries).
        query_encoding: ``per_type`` (one encoder sequence per (tweet, type), the paper's
            formulation) or ``packed`` (one sequence per tweet holding every query, then the
            tweet; see :mod:`mnerqg_graph.data.mrc`).
        packed_attention: ``full`` or ``isolated`` (a packed query sees only itself, ``[CLS]``
            and the tweet).
        packed_positions: ``sequential`` or ``per_query`` position ids of a packed sequence.
        packed_separators: a separator after every packed query (True) or one after the last
            (False: ``[CLS] q_1 ... q_T [SEP] tweet [SEP]``; with one-word queries, ``words``,
            the queries cost ``T + 1`` pieces a tweet).
        dropout: dropout in fusion and heads.
        loss_weights: weight of each loss part: start, end, match, existence, grounding, tags.
        decoder: how spans are decoded: ``span`` (the MRC span heads) or ``tags`` (the auxiliary
            tagger, averaged over the tweet's readings; needs ``tag_head``). Chosen on validation
            with the thresholds when the model has the tagger.
        span_threshold: each of start, end and match probabilities must pass it to decode a span.
        existence_threshold: spans of an example whose existence probability ("does the type
            occur in this tweet?") is under it are not decoded (0: the existence head is not used
            at decoding).
        grounding_threshold: confidence under which a type is "not in the image".
        grounding_presence_weight: weight of the grounding head's best-cell "type is in the image"
            BCE (part of the grounding loss; see ``GroundingHead.loss``).
        regions: the registered region source that turns the image into region nodes: ``grid``
            (every cell of every scale) or ``detector`` (a detector's boxes, RoIAligned at the scale
            that fits them; needs ``detector``).
        region_kwargs: further options of the region source (``detector``: ``canonical_size``,
            ``pool_size``, ``sampling_ratio``).
        max_regions: detector regions: ``K``, the most boxes an image gives.
        region_score_threshold: detector regions: detections under this score are not used.
        region_knn: box regions: each box is joined to its ``region_knn`` nearest boxes of its
            scale and of the next coarser scale (besides overlap and containment).
        detector: the detector checkpoint folder (``python -m detectors.detector train``) of
            ``regions="detector"``.
        detector_config: the detector's backend and constructor arguments, recorded from
            ``detector`` when the model is first built (a saved model rebuilds its detector from
            this and its own weights file, without the folder).
        freeze_image: the image side (backbone, and detector) does not train and runs in
            evaluation mode, as when its region features are read from a region cache.
        plugins: modules (dotted names, or paths of ``.py`` files) imported before the model is
            built, so that the components they register can be named here. A saved checkpoint
            lists every plugin module its components come from, and loading imports them
            (:mod:`mnerqg_graph.plugins`).

    The defaults are those of the SynthTweets demo (``python -m experiments.train``), whose Sacred
    ingredient takes them from here.
    """

    types: list[str]
    text_encoder: str
    fusion: str = "hetero_gat"
    fusion_layers: int = 1
    fusion_kwargs: dict[str, Any] = field(default_factory=default_fusion_kwargs)
    hidden_dim: int = 64
    use_image: bool = True
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=default_backbone_kwargs)
    image_size: int = 64
    num_scales: int = 3
    token_window: int = 2
    existence_gating: bool = True
    casing_dim: int = 16
    max_span_len: int = 8
    tag_head: bool = False
    tag_crf: bool = False
    head_dim: int = 0
    url_word: str = ""
    max_length: int = 128
    query_encoding: str = "per_type"
    packed_attention: str = "full"
    packed_positions: str = "sequential"
    packed_separators: bool = True
    dropout: float = 0.1
    loss_weights: dict[str, float] = field(default_factory=default_loss_weights)
    decoder: str = "span"
    span_threshold: float = 0.5
    existence_threshold: float = 0.0
    grounding_threshold: float = 0.5
    grounding_presence_weight: float = 1.0
    regions: str = "grid"
    region_kwargs: dict[str, Any] = field(default_factory=dict)
    max_regions: int = 16
    region_score_threshold: float = 0.3
    region_knn: int = 3
    detector: str = ""
    detector_config: dict[str, Any] = field(default_factory=dict)
    freeze_image: bool = False
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.backbone != "small_cnn" and self.backbone_kwargs == default_backbone_kwargs():
            self.backbone_kwargs = {}  # the default options are small_cnn's, not another's
        for name, allowed in (
            ("query_encoding", QUERY_ENCODINGS),
            ("packed_attention", PACKED_ATTENTION),
            ("packed_positions", PACKED_POSITIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}"
                )
        if self.decoder not in DECODERS:  # a plugin's decoder: in the registry
            from mnerqg_graph.decoding import DECODER_REGISTRY
            from mnerqg_graph.plugins import import_plugins

            if self.decoder not in DECODER_REGISTRY and self.plugins:
                try:  # the modules a saved config names register it (read before any build)
                    import_plugins(self.plugins)
                except (MnerqgError, ImportError, OSError) as exc:
                    why = " ".join(str(exc).split()) or type(exc).__name__
                    raise ConfigError(
                        f"decoder {self.decoder!r} comes from the plugins {self.plugins}, "
                        f"which cannot be imported ({why})"
                    ) from None
            if self.decoder not in DECODER_REGISTRY:
                known = ", ".join(DECODER_REGISTRY.names())
                raise ConfigError(f"decoder must be one of {known}, not {self.decoder!r}")
        if not 1 <= self.num_scales <= 3:
            raise ConfigError(f"num_scales must be 1..3 (region scales), not {self.num_scales!r}")
        if self.head_dim < 0:
            raise ConfigError(
                f"head_dim must be >= 0 (0: the heads' input width), not {self.head_dim!r}"
            )
        if self.tag_crf and not self.tag_head:
            raise ConfigError("tag_crf needs tag_head=True (the tagger whose tags it chains)")
        if self.decoder == "tags" and not self.tag_head:
            raise ConfigError("decoder 'tags' needs tag_head=True (the tagger it decodes with)")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, with the config version.

        ``plugins`` is left out when empty, so that a checkpoint that needs no plugin stays
        readable by the versions before the field existed.
        """
        data = dataclasses.asdict(self)
        if not data["plugins"]:
            del data["plugins"]
        return {"config_version": CONFIG_VERSION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        """Rebuild from :meth:`to_dict`'s output; unknown or missing keys are a ConfigError."""
        data = dict(data)
        version = data.pop("config_version", None)
        if version != CONFIG_VERSION:
            raise ConfigError(
                f"{source}: config_version {version!r} does not match this code ({CONFIG_VERSION})"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{source}: unknown model config keys {unknown}")
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ConfigError(f"{source}: missing model config keys {missing}")
        for f in dataclasses.fields(cls):  # JSON types: a config of another model is refused here
            kind = _JSON_KINDS[str(f.type).split("[")[0]]
            value = data.get(f.name, kind[0]())
            if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kind):
                raise ConfigError(f"{source}: {f.name} must be {f.type}, not {value!r}")
        unknown_loss = set(data.get("loss_weights", {})) - set(default_loss_weights())
        if unknown_loss:
            raise ConfigError(f"{source}: unknown loss_weights keys {sorted(unknown_loss)}")
        try:
            return cls(**data)
        except ConfigError as exc:  # a value check of __post_init__: say which file holds it
            raise ConfigError(f"{source}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        from mnerqg_graph.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        """Read a config.json; malformed JSON is a ConfigError naming the file."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read model config: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: model config must be a JSON object")
        return cls.from_dict(data, source=str(path))


@dataclass
class TrainConfig:
    """Optimisation settings (:class:`mnerqg_graph.training.loop.Trainer`).

    The defaults are those of the SynthTweets demo on a 2-core CPU; the Sacred ``optim``
    ingredient takes them from here (``seed`` is the experiment's own).

    Args:
        epochs: passes over the training set.
        batch_size: tweets per step (each brings ``T`` examples, one per type).
        lr: learning rate of everything but the text encoder.
        encoder_lr: learning rate of the text encoder.
        weight_decay: AdamW weight decay.
        warmup_ratio: share of steps with a linear warm-up, then linear decay to 0.
        grad_clip: max gradient norm (0: off).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        amp: bf16 autocast on CUDA (ignored on CPU).
        seed: seeds shuffling, dropout and initialisation.
        select_metric: validation metric that picks the best epoch.
        eval_batch_size: tweets per evaluation step.
        length_buckets: 0 shuffles tweets freely; ``N`` > 0 shuffles, then sorts each pool of
            ``N`` batches by sequence length and shuffles the batches (less padding: real tweets
            vary in length); ignored under a distributed sampler.
        layer_decay: 1 gives every text-encoder layer the encoder learning rate; below 1,
            layer-wise decay: the layer k steps under the top learns at encoder_lr times
            layer_decay to the power k.
        ema_decay: 0 trains as usual; in (0, 1), an exponential moving average of the weights
            with this decay is what is validated, selected and saved
            (:class:`~mnerqg_graph.training.averaging.WeightAverage`).
        progress: show each epoch's steps, running loss and ETA on stderr (main process only):
            a bar on a terminal, a line every 30 s in a log (:class:`~mnerqg_graph.progress.
            Progress`).
    """

    epochs: int = 11
    batch_size: int = 16
    lr: float = 2e-3
    encoder_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    select_metric: str = "f1"
    eval_batch_size: int = 64
    length_buckets: int = 0
    layer_decay: float = 1.0
    ema_decay: float = 0.0
    progress: bool = True
