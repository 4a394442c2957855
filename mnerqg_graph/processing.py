"""The processor: samples -> model inputs, the one object that owns preprocessing.

A :class:`MnerqgProcessor` holds what turns tweets into what a model reads: the tokenizer, the
entity-type queries and the preprocessing options (word-piece budget, span length, URL handling,
query encoding and position ids, image size or none). It is saved beside the model in a checkpoint
folder (``save_pretrained``/``from_pretrained``, as Hugging Face processors are)::

    processor.json        the options below (``processor_version`` 1)
    queries.json          entity type -> query sentence, in the order they are asked
    text_encoder/         the tokenizer files

A checkpoint written before ``processor.json`` existed loads too: its options are those of its
``config.json`` (:meth:`MnerqgProcessor.from_model_config`).

``processor(samples)`` builds the MRC examples of every tweet (one tokenizer pass), decodes each
image once (resized, kept as uint8) and groups them into :class:`ModelInputs`. An unreadable image
is counted and its tweet runs text-only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mnerqg_graph.data.collate import TweetItem
from mnerqg_graph.data.images import load_image
from mnerqg_graph.data.mrc import (
    PACKED_POSITIONS,
    QUERY_ENCODINGS,
    MrcReport,
    build_mrc_examples,
    iter_tweet_groups,
)
from mnerqg_graph.data.types import Sample, Tweet
from mnerqg_graph.encoders.features import token_shapes
from mnerqg_graph.errors import CheckpointError, ConfigError, DataError
from mnerqg_graph.io import read_json_object

#: The processor's options file in a checkpoint folder.
PROCESSOR_FILE = "processor.json"
#: Bumped when ``processor.json`` changes incompatibly.
PROCESSOR_VERSION = 1
#: The tokenizer's sub-folder (shared with the text encoder's config).
TOKENIZER_DIR = "text_encoder"
QUERIES_FILE = "queries.json"

#: What a processor accepts as one tweet: a sample, raw text, or a JSON-lines style record
#: ``{"id": ..., "text": "..." | "tokens": [...], "image": PATH}``.
TweetInput = Sample | str | Mapping[str, Any]


@dataclass
class PrepareReport:
    """What :func:`prepare_items` met on the way."""

    mrc: MrcReport
    n_images: int = 0
    unreadable_images: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs."""
        return (
            f"{self.mrc.n_tweets} tweets, {self.n_images} images "
            f"({len(self.unreadable_images)} unreadable -> text-only), "
            f"{len(self.mrc.truncated_ids)} truncated, "
            f"{len(self.mrc.long_entities)} entities longer than max_span_len"
            + (f", {n} URLs read as one word" if (n := self.mrc.n_urls_replaced) else "")
        )


def prepare_items(
    samples: Sequence[Sample],
    tokenizer: Any,
    queries: dict[str, str],
    max_length: int,
    max_span_len: int,
    image_size: int | None,
    url_word: str = "",
    query_encoding: str = "per_type",
    packed_positions: str = "sequential",
    max_positions: int | None = None,
    packed_separators: bool = True,
) -> tuple[list[TweetItem], PrepareReport]:
    """Turn samples into tweet items; ``image_size=None`` skips images (text-only model).

    The low-level step of :class:`MnerqgProcessor` (which holds every argument after
    ``samples``); ``url_word``, ``query_encoding``, ``packed_positions``, ``max_positions`` and
    ``packed_separators`` are passed to :func:`~mnerqg_graph.data.mrc.build_mrc_examples`.
    """
    examples, mrc_report = build_mrc_examples(
        list(samples),
        tokenizer,
        queries,
        max_length=max_length,
        max_span_len=max_span_len,
        url_word=url_word,
        query_encoding=query_encoding,
        packed_positions=packed_positions,
        max_positions=max_positions,
        packed_separators=packed_separators,
    )
    report = PrepareReport(mrc_report)
    items: list[TweetItem] = []
    for group in iter_tweet_groups(examples):
        idx = group[0].sample_index
        sample = samples[idx]
        image = None
        if image_size is not None and sample.image_path is not None:
            try:
                image = (load_image(sample.image_path, image_size) * 255).round().to(torch.uint8)
                report.n_images += 1
            except DataError:
                report.unreadable_images.append(str(sample.image_path))
        # boxes dropped for want of the image's size (reported) are unknown, not "no box": such a
        # tweet must not teach that every type is absent from its image
        labelled = sample.grounding_labelled and not (sample.boxes and sample.image_size is None)
        items.append(TweetItem(idx, group, token_shapes(sample.tweet.tokens), image, labelled))
    return items, report


@dataclass
class ModelInputs:
    """A list of tweets prepared for a model (what :class:`MnerqgProcessor` returns).

    Attributes:
        samples: the tweets, in the order given (predictions come back in this order).
        items: one :class:`~mnerqg_graph.data.collate.TweetItem` per tweet (``item.index`` is
            the tweet's position in ``samples``).
        report: truncations, unreadable images, ... met while preparing.
        pad_id: the tokenizer's padding id.
        processor: the processor that prepared them (checked against the model that reads
            them; None: not checked).
    """

    samples: list[Sample]
    items: list[TweetItem]
    report: PrepareReport
    pad_id: int = 0
    processor: Any = None

    def __len__(self) -> int:
        return len(self.samples)


def to_sample(value: TweetInput, index: int = 0) -> Sample:
    """One tweet as a :class:`~mnerqg_graph.data.types.Sample`.

    Args:
        value: a sample (as is), raw text (tokenized as ``mnerqg predict --text`` does) or a
            record with ``text`` or ``tokens``, and optionally ``id`` and ``image`` (a path; its
            size is read so that boxes come back in its pixels).
        index: the tweet's position (its id when the record has none).

    Raises:
        DataError: a record that :func:`mnerqg_graph.predict.record_fields` refuses (naming the
            tweet's position from 1 and the field), or an image that cannot be read.
    """
    if isinstance(value, Sample):
        return value
    from mnerqg_graph.predict import record_fields

    if isinstance(value, str):
        rec: Mapping[str, Any] = {"text": value}
    elif isinstance(value, Mapping):
        rec = value
    else:
        raise DataError("<input>", f"a tweet must be a Sample, text or a record, not {value!r}")
    tweet_id, tokens, image = record_fields(rec, "<input>", index + 1, index)
    path, size = None, None
    if image is not None:
        from mnerqg_graph.data.images import probe_image

        path = Path(image)
        size = probe_image(path)
    return Sample(Tweet(tweet_id, tokens, ["O"] * len(tokens), "<input>", 0), path, size)


@dataclass(eq=False)
class MnerqgProcessor:
    """Tokenizer, queries and preprocessing options: turns tweets into :class:`ModelInputs`.

    Build it with :meth:`from_model` (the options a model was built with), load it with
    :meth:`from_pretrained`, or give every option. ``processor(samples)`` prepares tweets exactly
    as the model reads them.

    Args:
        tokenizer: a Hugging Face fast tokenizer.
        queries: entity type -> query sentence, in the order they are asked (the model's types).
        max_length: word pieces per ``[CLS] query [SEP] tweet [SEP]`` sequence (the tweet's budget
            with ``packed`` queries).
        max_span_len: longest span scored, in tokens.
        image_size: side of the square image the backbone reads, in pixels (None: no images,
            a text-only model).
        url_word: the encoder reads this word in place of every URL token (``""``: as is).
        query_encoding: ``per_type`` or ``packed``.
        packed_positions: ``sequential`` or ``per_query`` position ids of a packed sequence.
        max_positions: the encoder's position limit, checked against ``max_length`` (per type)
            or the longest packed position id (None: not checked).
        packed_separators: a separator after every packed query (True) or only after the last.
    """

    tokenizer: Any
    queries: dict[str, str]
    max_length: int = 128
    max_span_len: int = 8
    image_size: int | None = 64
    url_word: str = ""
    query_encoding: str = "per_type"
    packed_positions: str = "sequential"
    max_positions: int | None = None
    packed_separators: bool = True

    #: The options saved in ``processor.json`` (everything but the tokenizer and the queries).
    OPTIONS = (
        "max_length",
        "max_span_len",
        "image_size",
        "url_word",
        "query_encoding",
        "packed_positions",
        "max_positions",
        "packed_separators",
    )

    def __post_init__(self) -> None:
        if not self.queries:
            raise ConfigError("a processor needs at least one entity-type query")
        if self.query_encoding not in QUERY_ENCODINGS:
            raise ConfigError(
                f"query_encoding must be one of {', '.join(QUERY_ENCODINGS)}, "
                f"not {self.query_encoding!r}"
            )
        if self.packed_positions not in PACKED_POSITIONS:
            raise ConfigError(
                f"packed_positions must be one of {', '.join(PACKED_POSITIONS)}, "
                f"not {self.packed_positions!r}"
            )
        for name in ("max_length", "max_span_len"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, not {getattr(self, name)!r}")
        if self.image_size is not None and int(self.image_size) < 1:
            raise ConfigError(f"image_size must be >= 1 or None, not {self.image_size!r}")
        self.queries = dict(self.queries)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, queries: Mapping[str, str]) -> MnerqgProcessor:
        """The processor that prepares inputs exactly as ``model`` reads them.

        Lengths, URL handling and query encoding come from ``model.config``, the image size from
        it when the model has an image branch (else None: no images are decoded), the position
        limit from its text encoder.
        """
        proc = cls.from_model_config(model.config, tokenizer, queries)
        return proc.replace(
            image_size=model.config.image.image_size if model.backbone is not None else None,
            max_positions=getattr(model.text_encoder, "max_positions", None),
        )

    @classmethod
    def from_model_config(
        cls, config: Any, tokenizer: Any, queries: Mapping[str, str]
    ) -> MnerqgProcessor:
        """A processor with a :class:`~mnerqg_graph.config.ModelConfig`'s preprocessing options.

        Without the built model the image branch and the encoder's position limit are unknown:
        the image size is the config's when it asks for images (``use_image``), and the position
        limit is not checked.
        """
        return cls(
            tokenizer,
            dict(queries),
            max_length=int(config.encoder.max_length),
            max_span_len=int(config.heads.max_span_len),
            image_size=int(config.image.image_size) if config.image.use_image else None,
            url_word=str(config.encoder.url_word),
            query_encoding=str(config.encoder.query_encoding),
            packed_positions=str(config.encoder.packed_positions),
            packed_separators=bool(config.encoder.packed_separators),
        )

    def replace(self, **changes: Any) -> MnerqgProcessor:
        """A copy with some options changed (e.g. ``image_size=None`` to skip images)."""
        return dataclasses.replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """The options of :data:`OPTIONS` as a JSON-ready dict."""
        return {k: getattr(self, k) for k in self.OPTIONS}

    @property
    def types(self) -> list[str]:
        """The entity types, in query order."""
        return list(self.queries)

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id (0 when it has none)."""
        return int(self.tokenizer.pad_token_id or 0)

    def check_model(self, model: Any) -> None:
        """Raise a ConfigError when ``model`` does not read what this processor prepares.

        The types, the query encoding, the packed position ids, the span length and the image
        size must agree (a processor without images fits any model: it runs text-only); the
        word-piece budget and URL handling may differ.
        """
        cfg = model.config
        want = {
            "types": list(cfg.types),
            "query_encoding": cfg.encoder.query_encoding,
            "packed_positions": cfg.encoder.packed_positions,
            "packed_separators": cfg.encoder.packed_separators,
            "max_span_len": cfg.heads.max_span_len,
            "image_size": cfg.image.image_size if model.backbone is not None else None,
        }
        have = {
            "types": self.types,
            "query_encoding": self.query_encoding,
            "packed_positions": self.packed_positions,
            "packed_separators": self.packed_separators,
            "max_span_len": self.max_span_len,
            "image_size": self.image_size,
        }
        if have["image_size"] is None:  # images left out on purpose: the model runs text-only
            want["image_size"] = None
        bad = [f"{k} {have[k]!r} (model: {want[k]!r})" for k in want if have[k] != want[k]]
        if bad:
            raise ConfigError("the processor does not fit the model: " + "; ".join(bad))

    # ---------------------------------------------------------------------------------------------
    def prepare(self, samples: Sequence[Sample]) -> tuple[list[TweetItem], PrepareReport]:
        """Tweet items of ``samples`` (index = position in ``samples``) and the report.

        :func:`prepare_items` gets the tokenizer, the queries and every option of :data:`OPTIONS`
        (its parameters are named after them).
        """
        return prepare_items(samples, self.tokenizer, self.queries, **self.options())

    def __call__(self, samples: Sequence[TweetInput] | TweetInput) -> ModelInputs:
        """Prepare tweets for the model.

        Args:
            samples: tweets as :class:`~mnerqg_graph.data.types.Sample` s, raw texts, or records
                (see :func:`to_sample`); one tweet alone is a list of one.

        Returns:
            The prepared inputs, in the order given.
        """
        if isinstance(samples, Sample | str | Mapping):
            samples = [samples]
        smp = [to_sample(s, i) for i, s in enumerate(samples)]
        items, report = self.prepare(smp)
        return ModelInputs(smp, items, report, self.pad_id, self)

    # ---------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``processor.json``, ``queries.json`` and the tokenizer files into ``directory``.

        Other files there (a model's) are kept; each file is replaced atomically. A non-empty
        folder that holds neither a model's weights nor a processor is refused: the model saved
        next into it replaces the folder as a whole.

        Raises:
            ConfigError: ``directory`` is a file, or a folder of something else.
        """
        from mnerqg_graph.io import check_replaceable

        directory = Path(directory)
        check_replaceable(directory, "model.safetensors", PROCESSOR_FILE)
        directory.mkdir(parents=True, exist_ok=True)
        self.write_files(directory)
        return directory

    def write_files(self, directory: Path) -> None:
        """Write this processor's files into an existing folder (see :meth:`save_pretrained`)."""
        import shutil
        import tempfile

        from mnerqg_graph.io import atomic_write_text

        tok_dir = directory / TOKENIZER_DIR
        tok_dir.mkdir(exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".tokenizer.", dir=directory))
        try:
            self.tokenizer.save_pretrained(str(staged))
            for f in sorted(staged.iterdir()):
                if f.is_file():
                    f.replace(tok_dir / f.name)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        atomic_write_text(directory / QUERIES_FILE, json.dumps(self.queries, indent=2) + "\n")
        meta = {"processor_version": PROCESSOR_VERSION, **self.options()}
        atomic_write_text(
            directory / PROCESSOR_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n"
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> MnerqgProcessor:
        """Load a processor saved by :meth:`save_pretrained` (or with a model checkpoint).

        A checkpoint without ``processor.json`` (written before it existed) gets its
        ``config.json``'s options.

        Raises:
            CheckpointError: the folder, its tokenizer or its queries are missing or unreadable.
            ConfigError: an option this code does not know or cannot use.
        """
        from transformers import AutoTokenizer

        from mnerqg_graph.data.queries import load_queries

        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"processor directory does not exist: {directory}")
        for name in (QUERIES_FILE, f"{TOKENIZER_DIR}/tokenizer.json"):
            if not (directory / name).is_file():
                raise CheckpointError(f"{directory}: processor is missing {name}")
        queries = load_queries(directory / QUERIES_FILE)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory / TOKENIZER_DIR))
        except (OSError, ValueError) as exc:
            msg = f"{directory}: cannot load the tokenizer: {exc}"
            raise CheckpointError(msg.splitlines()[0]) from None
        file = directory / PROCESSOR_FILE
        if not file.is_file():
            if not (directory / "config.json").is_file():
                raise CheckpointError(f"{directory}: processor is missing {PROCESSOR_FILE}")
            from mnerqg_graph.config import ModelConfig

            return cls.from_model_config(
                ModelConfig.load(directory / "config.json"), tokenizer, queries
            )
        data = read_json_object(
            file,
            ConfigError,
            unreadable="cannot read the processor options",
            not_object="the processor options must be a JSON object",
        )
        version = data.pop("processor_version", None)
        if version != PROCESSOR_VERSION:
            raise ConfigError(
                f"{file}: processor_version {version!r} does not match this code "
                f"({PROCESSOR_VERSION})"
            )
        unknown = sorted(set(data) - set(cls.OPTIONS))
        if unknown:
            raise ConfigError(f"{file}: unknown processor options {unknown}")
        try:
            return cls(tokenizer, queries, **data)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{file}: {exc}") from None
