"""The one inference path: prepared tweets -> forward passes -> decoded per-tweet predictions.

:func:`predict_grid` runs a model over :class:`~mnerqg_graph.processing.ModelInputs` once and
decodes every batch's output at each :class:`~mnerqg_graph.decoding.Decoding` asked (a decoder and
its thresholds; :mod:`mnerqg_graph.decoding`); :func:`predict` is the case of one decoding, the
model config's by default. :class:`Pipeline` pairs a model with its processor::

    pipe = Pipeline.from_pretrained("runs/demo/checkpoint")
    for tweet in pipe(["Kelvo visits Marn today"]):
        print(tweet.entities, tweet.tags, tweet.boxes)

``mnerqg predict``, the experiment's evaluation and its choice of decoder and thresholds on
validation, ``mnerqg visualize`` (:func:`~mnerqg_graph.viz.alignment.explain`), ``mnerqg report``
and the benchmarks all decode through :func:`~mnerqg_graph.decoding.decode_batch`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mnerqg_graph.data.collate import TweetItem
from mnerqg_graph.data.types import Sample
from mnerqg_graph.decoding import (
    DecoderInput,
    Decoding,
    Predictions,
    ScoredBox,
    ScoredSpan,
    check_decodings,
    decode_batch,
    tag_head_spans,
    tags_of,
)
from mnerqg_graph.errors import check_counts
from mnerqg_graph.processing import (
    MnerqgProcessor,
    ModelInputs,
    PrepareReport,
    TweetInput,
    prepare_items,
    to_sample,
)
from mnerqg_graph.progress import Progress

__all__ = [
    "Decoding",
    "ModelInputs",
    "Pipeline",
    "Predictions",
    "PrepareReport",
    "predict",
    "predict_grid",
    "prepare_items",
    "tag_head_spans",
]


def _batches(items: list[TweetItem], size: int) -> Iterator[list[TweetItem]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _device(model: Any, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def inference_precision(
    device: torch.device, bf16: bool | None = None
) -> contextlib.AbstractContextManager[Any]:
    """The precision of every inference pass (predict, the decoding choice, visualize).

    bf16 autocast on CUDA (as training runs with ``optim.amp``), float32 elsewhere, so that
    ``mnerqg visualize`` draws what ``mnerqg predict`` outputs on the same device.

    Args:
        device: where the model runs.
        bf16: force bf16 autocast on (True) or off (False); None: on CUDA only.
    """
    on = device.type == "cuda" if bf16 is None else bf16
    if not on:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_grid(
    model: Any,
    inputs: ModelInputs,
    decodings: Sequence[Decoding],
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> dict[Decoding, Predictions]:
    """One forward pass over ``inputs``, decoded at every decoding of ``decodings``.

    Runs without autograd (no backward graph is kept: inference-sized memory). Tweets are
    batched by length (less padding); the match head scores only the spans that a
    span threshold of the grid can accept (the decoders' span floor). Every decoder of the grid
    decodes each batch's output while it is there, so the whole grid costs one forward pass.

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel` (put in eval mode).
        inputs: the tweets, from :class:`~mnerqg_graph.processing.MnerqgProcessor`.
        decodings: the decoders and thresholds to decode at.
        batch_size: tweets per forward pass.
        device: where the model runs (None: where its parameters are).
        progress: told the tweets of each batch when the batch is decoded (the caller makes it
            and closes it); None: nothing shown.

    Returns:
        ``{decoding: Predictions}`` in the order of ``inputs.samples``; boxes are the same for
        all.

    Raises:
        ConfigError: a ``batch_size`` under 1, an unknown decoder, or one the model cannot use
            (the tagger without it), or inputs whose processor does not fit the model (other
            types, query layout, span length or image size).
    """
    from mnerqg_graph.data import collate as collate_mod  # looked up per call (bench labels it)

    check_counts(batch_size=batch_size)
    if inputs.processor is not None:  # inputs prepared for another layout decode wrongly
        inputs.processor.check_model(model)
    model.eval()
    cfg = model.config
    grid = [Decoding(str(d[0]), float(d[1]), float(d[2])) for d in decodings]
    floor = check_decodings(model, grid)
    samples = inputs.samples
    n = len(samples)
    spans: dict[Decoding, list[list[ScoredSpan]]] = {d: [[] for _ in range(n)] for d in grid}
    tags = {d: [["O"] * len(s.tweet.tokens) for s in samples] for d in grid}
    boxes: list[dict[str, ScoredBox]] = [{} for _ in range(n)]
    confs: list[dict[str, float]] = [{} for _ in range(n)]
    dev = _device(model, device)
    by_length = sorted(inputs.items, key=lambda it: max(len(ex.input_ids) for ex in it.examples))
    for chunk in _batches(by_length, batch_size):  # similar lengths together: less padding
        batch = collate_mod.collate(
            chunk, cfg.heads.max_span_len, cfg.image.image_size, inputs.pad_id
        )
        batch = batch.to(dev)
        with inference_precision(dev):
            out = model(batch, span_floor=floor)
        from torch.profiler import record_function

        with record_function("mnerqg::decode"):
            decoded = decode_batch(model, DecoderInput(out, chunk, samples), grid)
        for k, it in enumerate(chunk):
            boxes[it.index] = decoded.boxes[k]
            confs[it.index] = decoded.grounding_conf[k]
            n_tok = len(samples[it.index].tweet.tokens)
            for d in grid:
                got = decoded.entities[d][k]
                spans[d][it.index] = got
                tags[d][it.index] = tags_of(n_tok, got)
        if progress is not None:
            progress.update(len(chunk))
    return {d: Predictions(spans[d], tags[d], boxes, confs, list(samples)) for d in grid}


def predict(
    model: Any,
    inputs: ModelInputs,
    *,
    batch_size: int = 32,
    device: torch.device | str | None = None,
    decoding: Decoding | None = None,
    progress: Progress | None = None,
) -> Predictions:
    """Per-tweet predictions of prepared inputs: entities, BIO tags, boxes in pixels.

    Runs ``model`` over ``inputs`` and decodes with ``decoding`` (None: its config's). The one
    inference path: :meth:`MnerqgModel.predict <mnerqg_graph.model.MnerqgModel.predict>` is this
    function, and ``mnerqg predict``, evaluation, ``mnerqg visualize`` and the report decode this
    way. See :func:`predict_grid` for more on the arguments.

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel` (put in eval mode).
        inputs: from :class:`~mnerqg_graph.processing.MnerqgProcessor` (``processor(samples)``).
        batch_size: tweets per forward pass.
        device: where to run (None: where the model is).
        decoding: decoder and thresholds (None: the config's).
        progress: told the tweets of each batch as it is done.

    Returns:
        The predictions, in the order of ``inputs.samples``.
    """
    key = Decoding.of(model.config) if decoding is None else decoding
    got = predict_grid(
        model, inputs, [key], batch_size=batch_size, device=device, progress=progress
    )
    return next(iter(got.values()))


class Pipeline:
    """A model and its processor: tweets in, per-tweet predictions out.

    Args:
        model: an :class:`~mnerqg_graph.model.MnerqgModel`.
        processor: the processor that prepares its inputs (checked against the model).
        batch_size: tweets per forward pass.
        device: where the model runs (None: where it is).
    """

    def __init__(
        self,
        model: Any,
        processor: MnerqgProcessor,
        batch_size: int = 32,
        device: torch.device | str | None = None,
    ) -> None:
        check_counts(batch_size=batch_size)
        processor.check_model(model)
        self.model = model
        self.processor = processor
        self.batch_size = batch_size
        self.device = _device(model, device)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", batch_size: int = 32
    ) -> Pipeline:
        """The model and processor of a checkpoint folder.

        See :func:`~mnerqg_graph.training.checkpoint.load_checkpoint`.
        """
        from mnerqg_graph.training.checkpoint import load_checkpoint

        model, processor = load_checkpoint(directory, device)
        return cls(model, processor, batch_size, device)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model and its processor as one checkpoint folder."""
        path: Path = self.model.save_pretrained(directory, self.processor)
        return path

    def run(
        self,
        samples: Sequence[TweetInput],
        progress: Progress | None = None,
        decoding: Decoding | None = None,
    ) -> tuple[Predictions, PrepareReport]:
        """Predictions of ``samples`` (in their order) and the preparation report.

        The tweets are sorted by their number of tokens before they are prepared (less
        padding), as ``mnerqg predict`` runs them (one call per chunk of its input), so
        ``mnerqg predict`` and ``mnerqg report`` see the same batches and give the same numbers.
        The report's truncated ids and unreadable images are in the sorted order.
        """
        smp = [to_sample(s, i) for i, s in enumerate(samples)]
        order = sorted(range(len(smp)), key=lambda i: len(smp[i].tweet.tokens))
        ordered = self.processor([smp[i] for i in order])
        got = predict(
            self.model,
            ordered,
            batch_size=self.batch_size,
            device=self.device,
            decoding=decoding,
            progress=progress,
        )
        back = [0] * len(smp)
        for j, i in enumerate(order):
            back[i] = j
        return got.select(back), ordered.report

    def __call__(
        self, samples: Sequence[TweetInput] | TweetInput, progress: Progress | None = None
    ) -> Predictions:
        """Predictions of ``samples``: iterate them for one :class:`TweetPrediction` per tweet.

        Args:
            samples: tweets as samples, raw texts or records (``{"text" | "tokens", "id",
                "image"}``; see :func:`~mnerqg_graph.processing.to_sample`); one alone is a
                list of one.
            progress: told the tweets of each batch as it is done.
        """
        if isinstance(samples, Sample | str | Mapping):
            samples = [samples]
        return self.run(list(samples), progress)[0]
