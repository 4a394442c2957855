"""The ``model`` ingredient: every knob of :class:`mnerqg_graph.config.ModelConfig`."""

from __future__ import annotations

from sacred import Ingredient

from mnerqg_graph.config import default_loss_weights

model_ingredient = Ingredient("model")


@model_ingredient.config
def model_config() -> None:
    """Defaults: the SynthTweets demo model (tiny random-initialised BERT, small CNN)."""
    text_encoder = "tiny"  # tiny | minilm | PATH of a local Hugging Face model
    tiny = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}
    fusion = "hetero_gat"  # any registered fusion module (mnerqg_graph.fusion.FUSION_REGISTRY)
    fusion_layers = 1  # one hop already joins every token to every region
    fusion_kwargs = {"heads": 4}  # module-specific options (new keys need sacred -f)
    hidden_dim = 64
    use_image = True
    backbone = "small_cnn"
    backbone_kwargs = {"width": 16, "out_channels": 64, "min_stride": 8}  # 64 px: 2x2, 4x4, 8x8
    image_size = 64
    num_scales = 3
    token_window = 2
    existence_gating = True
    casing_dim = 16
    max_span_len = 8
    tag_head = False  # auxiliary BIO tagger over all types on the token nodes (loss weight "tags")
    url_word = ""  # the encoder reads this word for every URL token ("": URLs as they are)
    max_length = 128  # word pieces of [CLS] query [SEP] tweet [SEP]; the tweet's budget when packed
    query_encoding = "per_type"  # per_type (a sequence per type) | packed (one per tweet)
    packed_attention = "full"  # full | isolated (a packed query sees itself, [CLS], the tweet)
    packed_positions = "sequential"  # sequential | per_query (each query restarts after [CLS])
    dropout = 0.1
    loss_weights = default_loss_weights()  # start, end, match, existence (0.5), grounding, tags
    decoder = "span"  # span | tags (needs tag_head; tune_threshold=True re-chooses it on valid)
    span_threshold = 0.5  # decoding thresholds (tune_threshold=True re-chooses both on valid)
    existence_threshold = 0.0  # 0: the existence head does not filter spans at decoding
    grounding_threshold = 0.5
    grounding_presence_weight = 1.0  # best-cell "type is in the image" BCE in the grounding loss
    regions = "grid"  # region source: grid (every cell) | detector (boxes of model.detector)
    region_kwargs = {}  # further region-source options (detector: canonical_size, pool_size)
    max_regions = 16  # detector regions: K, the most boxes an image gives
    region_score_threshold = 0.3  # detector regions: detections under this score are not used
    region_knn = 3  # detector regions: each box joined to its k nearest (and overlapping) boxes
    detector = ""  # regions=detector: a checkpoint of python -m detectors.detector train
    freeze_image = False  # backbone (and detector) do not train (set by data.region_cache)
    plugins = []  # modules to import first (user fusion modules registered from outside)
