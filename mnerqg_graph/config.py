"""The configuration dataclasses: the one source of every default.

:class:`ModelConfig` holds everything needed to rebuild a model (saved as a checkpoint's
``config.json``), nested by concern: how the text is read (:class:`EncoderConfig`), the image
side (:class:`ImageConfig`), the graph (:class:`GraphConfig`), the fusion module
(:class:`FusionConfig`), the heads (:class:`HeadsConfig`), the losses (:class:`LossConfig`) and
decoding (:class:`DecodingConfig`). :class:`TrainConfig` holds the optimisation settings. Only the
edges (the Sacred experiment, the CLI) turn user config into them; the library's constructors
take typed arguments. The Sacred ingredients ``model`` and ``optim`` take their defaults from
these classes (``experiments/ingredients/defaults.py``), so a default is changed here and only
here.

A config written before the nesting (``config_version`` 1, every field at the top level) is read
by :meth:`ModelConfig.from_dict` through :func:`upgrade_flat_config` (:data:`FLAT_FIELDS` maps
each old key to its new place), so checkpoints saved by earlier versions still load.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
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
#: the MRC span heads, or the auxiliary BIO tagger (``heads.tag_head``).
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


#: Bumped when the saved config or weights layout changes incompatibly (2: nested by concern).
CONFIG_VERSION = 2


@dataclass
class EncoderConfig:
    """How the text is read: the text encoder and the preprocessing of its input.

    Args:
        name: local Hugging Face model directory (a checkpoint stores its own copy).
        max_length: word pieces per ``[CLS] query [SEP] tweet [SEP]`` sequence; with ``packed``
            queries the tweet gets the same budget (the sequence is longer by the other queries).
        url_word: the text encoder reads this word in place of every URL token (``""``: URLs as
            they are). A ``t.co`` URL is 15-20 random word pieces; the token itself (label, shape
            feature, output) is kept.
        casing_dim: size of the token casing/shape embedding (0: off).
        query_encoding: ``per_type`` (one encoder sequence per (tweet, type), the paper's
            formulation) or ``packed`` (one sequence per tweet holding every query, then the
            tweet; see :mod:`mnerqg_graph.data.mrc`).
        packed_attention: ``full`` or ``isolated`` (a packed query sees only itself, ``[CLS]``
            and the tweet).
        packed_positions: ``sequential`` or ``per_query`` position ids of a packed sequence.
        packed_separators: a separator after every packed query (True) or one after the last
            (False: ``[CLS] q_1 ... q_T [SEP] tweet [SEP]``; with one-word queries, ``words``,
            the queries cost ``T + 1`` pieces a tweet).
    """

    name: str = ""
    max_length: int = 128
    url_word: str = ""
    casing_dim: int = 16
    query_encoding: str = "per_type"
    packed_attention: str = "full"
    packed_positions: str = "sequential"
    packed_separators: bool = True

    def __post_init__(self) -> None:
        for name, allowed in (
            ("query_encoding", QUERY_ENCODINGS),
            ("packed_attention", PACKED_ATTENTION),
            ("packed_positions", PACKED_POSITIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"encoder.{name} must be one of {', '.join(allowed)}, "
                    f"not {getattr(self, name)!r}"
                )


@dataclass
class ImageConfig:
    """The image side: the backbone and the region source that turns an image into region nodes.

    Args:
        use_image: build the image branch (False: text-only graph of token and query nodes).
        backbone: registered image backbone name.
        backbone_kwargs: options of ``backbone``; the default (``{"width": 16, "out_channels":
            64, "min_stride": 8}``) is ``small_cnn``'s: set it with ``backbone``.
        image_size: side of the square image fed to the backbone, in pixels.
        num_scales: region scales used, coarsest first (1 = only the coarsest).
        freeze_image: the image side (backbone, and detector) does not train and runs in
            evaluation mode, as when its region features are read from a region cache.
        regions: the registered region source that turns the image into region nodes: ``grid``
            (every cell of every scale) or ``detector`` (a detector's boxes, RoIAligned at the scale
            that fits them; needs ``detector``).
        region_kwargs: further options of the region source (``detector``: ``canonical_size``,
            ``pool_size``, ``sampling_ratio``).
        max_regions: detector regions: ``K``, the most boxes an image gives.
        region_score_threshold: detector regions: detections under this score are not used.
        detector: the detector checkpoint folder (``python -m detectors.detector train``) of
            ``regions="detector"``.
        detector_config: the detector's backend and constructor arguments, recorded from
            ``detector`` when the model is first built (a saved model rebuilds its detector from
            this and its own weights file, without the folder).
    """

    use_image: bool = True
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=default_backbone_kwargs)
    image_size: int = 64
    num_scales: int = 3
    freeze_image: bool = False
    regions: str = "grid"
    region_kwargs: dict[str, Any] = field(default_factory=dict)
    max_regions: int = 16
    region_score_threshold: float = 0.3
    detector: str = ""
    detector_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.backbone != "small_cnn" and self.backbone_kwargs == default_backbone_kwargs():
            self.backbone_kwargs = {}  # the default options are small_cnn's, not another's
        if not 1 <= self.num_scales <= 3:
            raise ConfigError(
                f"image.num_scales must be 1..3 (region scales), not {self.num_scales!r}"
            )


@dataclass
class GraphConfig:
    """The heterogeneous graph: node width and edges.

    Args:
        hidden_dim: node feature size after fusion.
        token_window: token-token edges join tokens at most this far apart.
        region_knn: box regions: each box is joined to its ``region_knn`` nearest boxes of its
            scale and of the next coarser scale (besides overlap and containment).
        dropout: dropout in fusion and heads.
    """

    hidden_dim: int = 64
    token_window: int = 2
    region_knn: int = 3
    dropout: float = 0.1


@dataclass
class FusionConfig:
    """The fusion module: the GNN layers over the graph.

    Args:
        name: registered fusion module name (``hetero_gat``, ``none``, ...).
        layers: number of fusion layers (one hop already joins every token to every region).
        kwargs: module-specific options of ``name``; the default (``{"heads": 4}``) suits the
            built-in attention modules: set it with ``name``.
        existence_gating: gate unimodal messages by the existence probability.
    """

    name: str = "hetero_gat"
    layers: int = 1
    kwargs: dict[str, Any] = field(default_factory=default_fusion_kwargs)
    existence_gating: bool = True


@dataclass
class HeadsConfig:
    """The heads on the fused nodes (span, existence and grounding heads always; the tagger).

    Args:
        max_span_len: longest span scored, in tokens.
        head_dim: hidden width of the span heads' and the tagger's MLPs (0: their input width,
            the fused token features plus the token's own). They run on every token of every
            (tweet, type) example: a narrower width cuts most of what the heads cost.
        tag_head: add the auxiliary BIO tagger over all types on the token nodes, trained with the
            loss weight ``tags`` (its features are shared with the span heads; see
            ``decoding.decoder``).
        tag_crf: a linear-chain CRF over the tagger's BIO tags (needs ``tag_head``): its loss is
            the gold sequence's negative log-likelihood and the ``tags`` decoder reads the best
            sequence (Viterbi) under the BIO constraints.
    """

    max_span_len: int = 8
    head_dim: int = 0
    tag_head: bool = False
    tag_crf: bool = False

    def __post_init__(self) -> None:
        if self.head_dim < 0:
            raise ConfigError(
                f"heads.head_dim must be >= 0 (0: the heads' input width), not {self.head_dim!r}"
            )
        if self.tag_crf and not self.tag_head:
            raise ConfigError(
                "heads.tag_crf needs heads.tag_head=True (the tagger whose tags it chains)"
            )


@dataclass
class LossConfig:
    """The training losses.

    Args:
        weights: weight of each loss part: start, end, match, existence, grounding, tags.
        grounding_presence_weight: weight of the grounding head's best-cell "type is in the image"
            BCE (part of the grounding loss; see ``GroundingHead.loss``).
    """

    weights: dict[str, float] = field(default_factory=default_loss_weights)
    grounding_presence_weight: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(default_loss_weights())
        if unknown:
            raise ConfigError(f"unknown losses.weights keys {sorted(unknown)}")


@dataclass
class DecodingConfig:
    """How the heads' scores become entities and boxes (chosen on validation by the experiment).

    Args:
        decoder: how spans are decoded: ``span`` (the MRC span heads) or ``tags`` (the auxiliary
            tagger, averaged over the tweet's readings; needs ``heads.tag_head``). Chosen on
            validation with the thresholds when the model has the tagger.
        span_threshold: each of start, end and match probabilities must pass it to decode a span.
        existence_threshold: spans of an example whose existence probability ("does the type
            occur in this tweet?") is under it are not decoded (0: the existence head is not used
            at decoding).
        grounding_threshold: confidence under which a type is "not in the image".
    """

    decoder: str = "span"
    span_threshold: float = 0.5
    existence_threshold: float = 0.0
    grounding_threshold: float = 0.5


#: The sections of :class:`ModelConfig`, by field name.
SECTIONS: dict[str, type] = {
    "encoder": EncoderConfig,
    "image": ImageConfig,
    "graph": GraphConfig,
    "fusion": FusionConfig,
    "heads": HeadsConfig,
    "losses": LossConfig,
    "decoding": DecodingConfig,
}

#: Where each key of a version-1 (flat) config lives now: old key -> (section, field).
FLAT_FIELDS: dict[str, tuple[str, str]] = {
    **{f.name: ("encoder", f.name) for f in dataclasses.fields(EncoderConfig)},
    **{f.name: ("image", f.name) for f in dataclasses.fields(ImageConfig)},
    **{f.name: ("graph", f.name) for f in dataclasses.fields(GraphConfig)},
    "existence_gating": ("fusion", "existence_gating"),
    **{f.name: ("heads", f.name) for f in dataclasses.fields(HeadsConfig)},
    "grounding_presence_weight": ("losses", "grounding_presence_weight"),
    **{f.name: ("decoding", f.name) for f in dataclasses.fields(DecodingConfig)},
    "text_encoder": ("encoder", "name"),
    "fusion": ("fusion", "name"),
    "fusion_layers": ("fusion", "layers"),
    "fusion_kwargs": ("fusion", "kwargs"),
    "loss_weights": ("losses", "weights"),
}
del FLAT_FIELDS["name"]


def upgrade_flat_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 config (every field at the top level) in today's nested layout.

    Args:
        data: the old ``config.json`` content (``config_version`` 1).

    Returns:
        The same settings as a version-:data:`CONFIG_VERSION` dict (unknown keys are kept at the
        top level, for :meth:`ModelConfig.from_dict` to report).
    """
    out: dict[str, Any] = {"config_version": CONFIG_VERSION}
    for key, value in data.items():
        if key == "config_version":
            continue
        if key in FLAT_FIELDS:
            section, name = FLAT_FIELDS[key]
            out.setdefault(section, {})[name] = value
        else:
            out[key] = value
    return out


def _check_kinds(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> None:
    """Raise a ConfigError for unknown keys or values of the wrong JSON kind in a section."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        moved = [f"{k} (now {'.'.join(FLAT_FIELDS[k])})" for k in unknown if k in FLAT_FIELDS]
        hint = f"; moved since config_version 1: {', '.join(moved)}" if moved else ""
        names = [f"{prefix}{k}" for k in unknown]
        raise ConfigError(f"{source}: unknown model config keys {names}{hint}")
    for name, value in data.items():
        f = fields[name]
        if not prefix and name in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {prefix}{name} must be a JSON object, not {value!r}")
            continue
        kind = _JSON_KINDS[str(f.type).split("[")[0]]
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kind):
            raise ConfigError(f"{source}: {prefix}{name} must be {f.type}, not {value!r}")


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`mnerqg_graph.model.MnerqgModel`, nested by concern.

    Args:
        types: entity types, in query order.
        encoder: how the text is read (:class:`EncoderConfig`; ``encoder.name`` is the model).
        image: the image side and its regions (:class:`ImageConfig`).
        graph: node width, edges and dropout (:class:`GraphConfig`).
        fusion: the fusion module (:class:`FusionConfig`).
        heads: the heads (:class:`HeadsConfig`).
        losses: the loss weights (:class:`LossConfig`).
        decoding: decoder and thresholds (:class:`DecodingConfig`).
        plugins: modules (dotted names, or paths of ``.py`` files) imported before the model is
            built, so that the components they register can be named here. A saved checkpoint
            lists every plugin module its components come from, and loading imports them
            (:mod:`mnerqg_graph.plugins`).

    The defaults are those of the SynthTweets demo (``python -m experiments.train``), whose Sacred
    ingredient takes them from here. A section may be given as a dict of its fields.
    """

    types: list[str]
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    plugins: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():  # a section given as a dict of its fields
            value = getattr(self, name)
            if isinstance(value, Mapping):
                setattr(self, name, cls(**value))
        decoder = self.decoding.decoder
        if decoder not in DECODERS:  # a plugin's decoder: in the registry
            from mnerqg_graph.decoding import DECODER_REGISTRY
            from mnerqg_graph.plugins import import_plugins

            if decoder not in DECODER_REGISTRY and self.plugins:
                try:  # the modules a saved config names register it (read before any build)
                    import_plugins(self.plugins)
                except (MnerqgError, ImportError, OSError) as exc:
                    why = " ".join(str(exc).split()) or type(exc).__name__
                    raise ConfigError(
                        f"decoder {decoder!r} comes from the plugins {self.plugins}, "
                        f"which cannot be imported ({why})"
                    ) from None
            if decoder not in DECODER_REGISTRY:
                known = ", ".join(DECODER_REGISTRY.names())
                raise ConfigError(f"decoding.decoder must be one of {known}, not {decoder!r}")
        if decoder == "tags" and not self.heads.tag_head:
            raise ConfigError(
                "decoding.decoder 'tags' needs heads.tag_head=True (the tagger it decodes with)"
            )

    @staticmethod
    def field_paths() -> list[str]:
        """Every setting's dotted path (``types``, ``encoder.name``, ..., ``plugins``)."""
        paths = []
        for f in dataclasses.fields(ModelConfig):
            if f.name in SECTIONS:
                paths += [f"{f.name}.{g.name}" for g in dataclasses.fields(SECTIONS[f.name])]
            else:
                paths.append(f.name)
        return paths

    def updated(self, updates: Mapping[str, Any]) -> ModelConfig:
        """A copy with some fields changed, named by dotted paths (``heads.tag_head``).

        Args:
            updates: ``section.field`` (or a top-level field: ``types``, ``plugins``) -> value.

        Returns:
            A new config (checked as :meth:`from_dict` checks a file).

        Raises:
            ConfigError: an unknown path or a value of the wrong kind.
        """
        data = self.to_dict()
        for path, value in updates.items():
            *parents, name = path.split(".")  # fusion.kwargs.heads: into the dict option too
            target: Any = data
            for part in parents:
                target = target.get(part) if isinstance(target, dict) else None
                if not isinstance(target, dict):
                    raise ConfigError(f"unknown model config key {path!r}")
            target[name] = value
        return ModelConfig.from_dict(data, source="model config update")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the sections, with the config version.

        ``plugins`` is left out when empty (a checkpoint that needs no plugin names none).
        """
        data = dataclasses.asdict(self)
        if not data["plugins"]:
            del data["plugins"]
        return {"config_version": CONFIG_VERSION, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> ModelConfig:
        """Rebuild from :meth:`to_dict`'s output (or a version-1 flat config, upgraded).

        Args:
            data: the JSON object.
            source: what to name in errors (the file).

        Raises:
            ConfigError: another version, unknown or missing keys, values of the wrong kind or
                out of range (the message names ``source`` and the key).
        """
        data = dict(data)
        version = data.get("config_version")
        if version == 1:
            data = upgrade_flat_config(data)
        elif version != CONFIG_VERSION:
            raise ConfigError(
                f"{source}: config_version {version!r} does not match this code ({CONFIG_VERSION})"
            )
        data.pop("config_version")
        _check_kinds(cls, data, source, "")
        if "types" not in data:
            raise ConfigError(f"{source}: missing model config keys ['types']")
        for name, section in SECTIONS.items():
            _check_kinds(section, data.get(name, {}), source, f"{name}.")
        if not data.get("encoder", {}).get("name"):
            raise ConfigError(f"{source}: missing model config keys ['encoder.name']")
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

    def __post_init__(self) -> None:
        """Reject settings that would fail late (after the data is read) or train nothing."""
        checks = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1"),
            ("length_buckets", self.length_buckets >= 0, "an integer >= 0"),
            ("lr", self.lr > 0, "> 0"),
            ("encoder_lr", self.encoder_lr >= 0, ">= 0 (0 freezes the encoder)"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio <= 1, "in [0, 1]"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0: off)"),
            ("layer_decay", 0 < self.layer_decay <= 1, "in (0, 1]"),
            ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1) (0: off)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"optim.{name} must be {rule}, not {getattr(self, name)!r}")
