"""Write every picture and graph file of a list of tweets: the CLI's and the experiment's output.

For each tweet, in ``OUT/<tweet id>/``:

* ``boxes.png``: predicted box per type (and gold boxes, dashed); a "no image" placeholder when
  the tweet has none;
* per entity type ``T``: ``graph_T.png`` (the drawn graph), ``heatmap_T.png`` (one entity's
  attention over the image per scale), ``alignment_T.graphml`` and ``alignment_T.json`` (the graph
  as data, every token-region and query-token edge weighted by its attention).

The Sacred experiment calls :func:`visualize_samples` at the end of a run (``visualize=N``) and
attaches the files as artifacts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import ConfigError
from mnerqg_graph.viz.alignment import TweetExplanation, explain, safe_name, write_graph
from mnerqg_graph.viz.draw import DPI, draw_boxes, draw_graph, draw_heatmap, load_picture

#: Edges drawn per scale when neither ``top_k`` nor ``threshold`` is given.
DEFAULT_TOP_K = 20


def visualize_tweet(
    expl: TweetExplanation,
    folder: str | Path,
    top_k: int | None = DEFAULT_TOP_K,
    threshold: float | None = None,
    gold: bool | None = None,
    types: Sequence[str] | None = None,
    dpi: int = DPI,
    compact: bool = False,
) -> list[Path]:
    """Write one tweet's pictures and graph files into ``folder``.

    Args:
        expl: the tweet's explanation (:func:`~mnerqg_graph.viz.alignment.explain`).
        folder: where to write (created).
        top_k: strongest token-region edges drawn per scale (None: no limit).
        threshold: draw only edges at least this strong (None: no limit).
        gold: draw the gold boxes panel (None: when the sample has gold boxes).
        types: entity types to draw (None: all).
        dpi: resolution of the PNGs.
        compact: write 256-colour PNGs (about a third of the size).

    Returns:
        The files written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    picture = load_picture(expl.sample)
    paths = [draw_boxes(expl, folder / "boxes.png", picture, gold, dpi, compact)]
    for t, al in expl.alignments.items():
        if types is not None and t not in types:
            continue
        name = safe_name(t)
        paths.append(
            draw_graph(
                al,
                folder / f"graph_{name}.png",
                None if picture is None else picture[0],
                top_k,
                threshold,
                dpi,
                compact,
            )
        )
        paths.extend(write_graph(al, folder, f"alignment_{name}"))
        paths.append(draw_heatmap(al, folder / f"heatmap_{name}.png", picture, dpi, compact))
    return paths


def visualize_samples(
    model: Any,
    processor: Any,
    samples: Sequence[Sample],
    out_dir: str | Path,
    top_k: int | None = DEFAULT_TOP_K,
    threshold: float | None = None,
    gold: bool | None = None,
    types: Sequence[str] | None = None,
    batch_size: int = 8,
    dpi: int = DPI,
    compact: bool = False,
) -> list[Path]:
    """Run ``model`` on ``samples`` and write each tweet's pictures into ``out_dir/<tweet id>/``.

    Args:
        model: a :class:`~mnerqg_graph.model.MnerqgModel` (CPU or GPU; its mode is restored).
        processor: its :class:`~mnerqg_graph.processing.MnerqgProcessor` (tokenizer, queries,
            preprocessing options).
        samples: the tweets (with image paths and, for the gold panel, gold boxes).
        out_dir: the output folder (created).
        top_k: strongest token-region edges drawn per scale (None: no limit).
        threshold: draw only edges at least this strong (None: no limit).
        gold: draw the gold boxes panel (None: for tweets that have gold boxes).
        types: entity types to draw (None: every type of the processor's queries).
        batch_size: tweets per forward pass.
        dpi: resolution of the PNGs.
        compact: write 256-colour PNGs (about a third of the size).

    Returns:
        Every file written. A tweet whose id is not a safe folder name gets a cleaned one, and
        repeated ids get ``-2``, ``-3``, ... suffixes.

    Raises:
        ConfigError: ``types`` names a type without a query, or ``top_k < 1``.
    """
    queries = processor.queries
    if types is not None:
        unknown = [t for t in types if t not in queries]
        if unknown:
            raise ConfigError(
                f"no query for type(s) {', '.join(unknown)}; the model knows {', '.join(queries)}"
            )
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1, got {top_k}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    paths: list[Path] = []
    for expl in explain(model, processor, samples, batch_size=batch_size):
        base = name = safe_name(expl.tweet_id)
        k = 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        paths.extend(visualize_tweet(expl, out / name, top_k, threshold, gold, types, dpi, compact))
    return paths
