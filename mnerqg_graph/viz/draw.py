"""Pictures of an :class:`~mnerqg_graph.viz.alignment.Alignment`: graph, boxes, heat maps.

Headless by construction: every figure is a :class:`matplotlib.figure.Figure` rendered by the Agg
canvas (pyplot's global state and backend are never touched), so this works without a display and
does not change the backend of the program that calls it.

* :func:`draw_graph`: the (tweet, type) graph with networkx: tokens in sentence order in one column
  (placed by index), the region grids stacked on the right (one small grid per scale, over the
  image), the query and image nodes, and the strongest token-region edges with width and colour by
  attention weight (colour bar); predicted entity tokens in their type's colour.
* :func:`draw_boxes`: the image with the predicted box of each type (solid) and, when asked, the
  gold boxes (dashed) in a second panel, like detectron2's visualizer shows predictions next to
  ground truth; a "no image" placeholder when there is none.
* :func:`draw_heatmap`: one entity's attention over the image at each scale.
"""

from __future__ import annotations

import io
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import FormatStrFormatter, LogLocator

from mnerqg_graph.data.types import Sample
from mnerqg_graph.errors import DataError
from mnerqg_graph.io import atomic_write_bytes
from mnerqg_graph.viz.alignment import Alignment, TweetExplanation, graph_layout, grid_frame

#: Colour of each entity type (others get a colour of the tab10 cycle).
TYPE_COLOURS: dict[str, str] = {
    "PER": "#1f77b4",
    "LOC": "#2ca02c",
    "ORG": "#d62728",
    "OTHER": "#9467bd",
    "MISC": "#9467bd",
}
_EXTRA = ["#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
EDGE_CMAP = "plasma_r"
HEAT_CMAP = "inferno"
DPI = 100


def type_colour(entity_type: str) -> str:
    """A stable colour for an entity type."""
    if entity_type in TYPE_COLOURS:
        return TYPE_COLOURS[entity_type]
    return _EXTRA[sum(map(ord, entity_type)) % len(_EXTRA)]


def load_picture(sample: Sample, max_side: int = 480) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The sample's image for drawing (RGB, at most ``max_side`` pixels) and its original size.

    Returns:
        ``(pixels [H, W, 3] uint8, (width, height) of the stored image)``, or None when there is no
        image or it cannot be read.
    """
    if sample.image_path is None:
        return None
    from mnerqg_graph.data.images import read_rgb

    try:  # as the model reads it: transparency on white, 16-bit scaled (not black, not white)
        rgb, stored = read_rgb(sample.image_path, max_side)
    except DataError:
        return None
    size = sample.image_size or stored
    rgb.thumbnail((max_side, max_side))
    return np.asarray(rgb, dtype=np.uint8), (int(size[0]), int(size[1]))


def select_edges(
    al: Alignment, top_k: int | None = 20, threshold: float | None = None
) -> np.ndarray:
    """Indices of the edges to draw, strongest first.

    Args:
        al: the alignment.
        top_k: keep the ``top_k`` strongest edges of each scale (None: no limit). Per scale,
            because a token's attention is spread over ``rows * cols`` cells, so the finer grids'
            weights are smaller and a global top-k would show the coarsest grid only.
        threshold: keep only edges whose weight is at least this (None: no limit).

    Returns:
        ``[K]`` int array of indices into ``al.edge_*``.
    """
    if not al.num_edges:
        return np.zeros(0, dtype=np.int64)
    scale = np.array([r.scale for r in al.regions])[al.edge_region]
    keep: list[np.ndarray] = []
    for s in np.unique(scale):
        idx = np.nonzero(scale == s)[0]
        if threshold is not None:
            idx = idx[al.edge_weight[idx] >= threshold]
        idx = idx[np.argsort(-al.edge_weight[idx], kind="stable")]
        keep.append(idx[:top_k] if top_k is not None else idx)
    out = np.concatenate(keep)
    return out[np.argsort(-al.edge_weight[out], kind="stable")]


def save_png(fig: Figure, path: str | Path, dpi: int = DPI, compact: bool = False) -> Path:
    """Render ``fig`` with the Agg canvas into a PNG.

    Args:
        fig: the figure.
        path: the PNG to write (its folder is created).
        dpi: resolution.
        compact: write a 256-colour palette PNG (about a third of the size; slight banding in
            colour gradients), e.g. for pictures kept in a repository.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # tweets are full of emoji that DejaVu Sans does not have
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(
            buf, dpi=dpi, format="png", facecolor="white", bbox_inches="tight", pad_inches=0.15
        )
    if not compact:
        atomic_write_bytes(path, buf.getvalue())
        return path
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as image:
        rgb = image.convert("RGB")
    small = io.BytesIO()
    rgb.quantize(256, method=Image.Quantize.MEDIANCUT).save(small, format="PNG", optimize=True)
    atomic_write_bytes(path, small.getvalue())
    return path


def _wrap(text: str, width: int = 90) -> str:
    return "\n".join(textwrap.wrap(text, width)) if text else ""


def _show_image(
    ax: Axes, picture: np.ndarray, extent: tuple[float, float, float, float], alpha: float = 1.0
) -> None:
    """Draw pixels into ``extent = (left, right, bottom, top)`` of an axis whose y grows down."""
    ax.imshow(picture, extent=extent, alpha=alpha, interpolation="nearest", zorder=0, aspect="auto")


def _label_beside(ax: Axes, text: str, xy: Any, dx: float, fontsize: float, **style: Any) -> None:
    """Write a label beside a point, centred on it vertically.

    Args:
        ax: the axes.
        text: the label.
        xy: the point, in data coordinates.
        dx: how far beside it, in points: right of it when positive (left-aligned text), left of
            it when negative (right-aligned text).
        fontsize: the text size.
        **style: other text options (``color``, ``fontweight``, ...).
    """
    ax.annotate(
        text,
        xy,
        xytext=(dx, 0),
        textcoords="offset points",
        fontsize=fontsize,
        va="center",
        ha="left" if dx > 0 else "right",
        **style,
    )


def _box_patch(
    box: Sequence[float],
    size: tuple[float, float],
    origin: tuple[float, float] = (0.0, 0.0),
    **style: Any,
) -> Rectangle:
    """The rectangle of a normalised ``xyxy`` box drawn in a frame of ``size`` at ``origin``.

    Args:
        box: ``(x0, y0, x1, y1)`` in ``[0, 1]`` of the frame.
        size: the frame's ``(width, height)`` in data coordinates.
        origin: the frame's top-left corner in data coordinates.
        **style: the patch's options (``fill``, ``ec``, ``lw``, ...).
    """
    (w, h), (x, y) = size, origin
    return Rectangle(
        (x + box[0] * w, y + box[1] * h), (box[2] - box[0]) * w, (box[3] - box[1]) * h, **style
    )


def draw_graph(
    al: Alignment,
    path: str | Path,
    picture: np.ndarray | None = None,
    top_k: int | None = 20,
    threshold: float | None = None,
    dpi: int = DPI,
    compact: bool = False,
) -> Path:
    """Draw the (tweet, type) graph with its strongest attention edges into a PNG.

    Args:
        al: the alignment.
        path: the PNG to write.
        picture: the image pixels (from :func:`load_picture`) shown under each region grid.
        top_k: strongest edges drawn per scale (see :func:`select_edges`).
        threshold: only edges at least this strong are drawn.
        dpi: resolution of the PNG.
        compact: write a 256-colour PNG (see :func:`save_png`).

    Returns:
        ``path``.
    """
    return save_png(graph_figure(al, picture, top_k, threshold), path, dpi, compact)


def graph_figure(
    al: Alignment,
    picture: np.ndarray | None = None,
    top_k: int | None = 20,
    threshold: float | None = None,
) -> Figure:
    """The figure of :func:`draw_graph` (same arguments but ``path``)."""
    pos = graph_layout(al)
    chosen = select_edges(al, top_k, threshold)
    g = nx.DiGraph()
    g.add_nodes_from(pos)
    weights = al.edge_weight[chosen].astype(np.float64)

    span = max(al.n_tokens - 1, 5)
    if al.image_branch:
        x0, side, tops = grid_frame(al)
        x_max = x0 + side + 0.8
        y_max = max(span, tops[-1] + side) + 0.8
    else:
        x0, side, tops = 0.0, 0.0, []
        x_max, y_max = 3.0, span + 0.8
    x_min = -0.8  # token labels go left of the axes (the saved picture's tight box keeps them)
    width_units, height_units = x_max - x_min, y_max + 3.0
    # inches per data unit: at least ~0.25 in between tokens, so long tweets stay readable
    scale = min(max(7.5, 0.25 * height_units) / height_units, 11.0 / width_units, 0.6)
    fig = Figure(figsize=(max(width_units * scale + 1.8, 5.0), height_units * scale + 1.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(x_min, x_max)
    ax.set_ylim(y_max, -2.6)  # y grows downwards: token 0 at the top
    ax.set_axis_off()

    # region grids: the image (faded) under each, then the cells (or the detected boxes)
    if al.image_branch and al.has_image:
        sizes_per_scale = al.scale_sizes()
        for level in range(al.num_scales):
            top = tops[level]
            if picture is not None:
                _show_image(ax, picture, (x0, x0 + side, top + side, top), alpha=0.55)
            ax.add_patch(Rectangle((x0, top), side, side, fill=False, lw=0.8, ec="#555555"))
            what = (
                "{}x{}".format(*al.grids[level]) if al.grids else f"{sizes_per_scale[level]} boxes"
            )
            for r in al.regions if not al.grids else []:
                if r.scale == level + 1:
                    ax.add_patch(
                        _box_patch(r.box, (side, side), (x0, top), fill=False, lw=0.8, ec="#1f3f7f")
                    )
            _label_beside(
                ax, f"s{level + 1}\n{what}", (x0 + side, top + side / 2), 5, 8, color="#333333"
            )
        sizes = {
            lvl: max(8.0, 700.0 / (c**1.6))
            for lvl, c in enumerate([c for _, c in al.grids] if al.grids else [4] * al.num_scales)
        }
        nx.draw_networkx_nodes(
            g,
            pos,
            ax=ax,
            nodelist=[r.node_id for r in al.regions],
            node_size=[sizes[r.scale - 1] for r in al.regions],
            node_color="white",
            edgecolors="#444444",
            linewidths=0.5,
            alpha=0.6,
            node_shape="s",
        )
    elif al.image_branch:
        ax.text(
            x0 + side / 2,
            span / 2,
            "no image",
            fontsize=16,
            ha="center",
            va="center",
            color="#777777",
            bbox={"boxstyle": "round", "fc": "#eeeeee", "ec": "#999999"},
        )

    # edges, weakest first so the strongest are on top
    if len(chosen):
        cmap = colormaps[EDGE_CMAP]
        lo, hi = float(weights.min()), float(weights.max())
        norm: Normalize = (
            LogNorm(vmin=lo, vmax=hi)
            if lo > 0 and hi / lo > 10
            else Normalize(vmin=min(lo, hi - 1e-9), vmax=hi)
        )
        order = np.argsort(weights, kind="stable")
        ordered = [
            (
                al.regions[int(al.edge_region[chosen[k]])].node_id,
                f"token:{int(al.edge_token[chosen[k]])}",
            )
            for k in order.tolist()
        ]
        g.add_edges_from(ordered)
        w_ord = weights[order]
        rel = np.clip(np.asarray(norm(w_ord), dtype=np.float64), 0.0, 1.0)
        nx.draw_networkx_edges(
            g,
            pos,
            ax=ax,
            edgelist=ordered,
            arrows=False,
            width=(0.4 + 3.2 * rel).tolist(),
            edge_color=[cmap(v) for v in rel.tolist()],
            alpha=0.8,
        )
        sm = ScalarMappable(norm=norm, cmap=cmap)
        bar = fig.colorbar(sm, ax=ax, fraction=0.035, pad=0.07)
        bar.set_label("attention weight (last fusion layer)", fontsize=8)
        bar.ax.tick_params(which="both", labelsize=7)
        if isinstance(norm, LogNorm):
            bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            bar.ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            bar.ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2g"))

    # tokens, coloured by predicted entity type
    entity = al.entity_of()
    tok_nodes = [t.node_id for t in al.tokens]
    nx.draw_networkx_nodes(
        g,
        pos,
        ax=ax,
        nodelist=tok_nodes,
        node_size=110,
        node_color=[
            type_colour(entity[t.position]) if t.position in entity else "#dddddd"
            for t in al.tokens
        ],
        edgecolors="#333333",
        linewidths=0.6,
    )
    for t in al.tokens:
        x, y = pos[t.node_id]
        ent = entity.get(t.position)
        _label_beside(
            ax,
            t.text,
            (x, y),
            -9,
            9,
            color=type_colour(ent) if ent else "#222222",
            fontweight="bold" if ent == al.type else "normal",
        )

    # query and image nodes
    others = [n for n in ("query", "image") if n in pos]
    nx.draw_networkx_nodes(
        g,
        pos,
        ax=ax,
        nodelist=others,
        node_size=260,
        node_color=[type_colour(al.type), "#bbbbbb"][: len(others)],
        node_shape="D",
        edgecolors="#222222",
        linewidths=0.8,
    )
    _label_beside(ax, f"query: {al.type}", pos["query"], 14, 9, fontweight="bold")
    if "image" in pos:
        _label_beside(
            ax, "image" if al.has_image else "image (learned 'no image' node)", pos["image"], 14, 8
        )

    grounding = ""
    if al.box is not None:
        grounding = f"box conf {al.box[1]:.2f}"
        if not al.grounded:
            grounding += f" < {al.grounding_threshold:g}: not in image"
    drawn = (
        f"edges: {len(chosen)} of {al.num_edges} drawn"
        + (f" (top {top_k} per scale)" if top_k is not None else "")
        + (f" (weight >= {threshold:g})" if threshold is not None else "")
    )
    lines = [
        f"tweet {al.tweet_id} - {al.type} query graph - fusion '{al.fusion}'",
        _wrap(f'"{al.query}"', 100),
        al.note() or drawn,
    ]
    if grounding:
        lines[-1] += f"; {grounding}"
    fig.suptitle("\n".join(x for x in lines if x), fontsize=9)
    present = sorted(set(entity.values()))
    if present:
        ax.legend(
            handles=[Patch(color=type_colour(t), label=t) for t in present],
            loc="lower left",
            fontsize=7,
            title="predicted",
            title_fontsize=7,
            frameon=False,
        )
    return fig


def _axes_note(ax: Axes, xy: tuple[float, float], text: str, fontsize: float, **style: Any) -> None:
    """Write a note centred horizontally on a point given in axes coordinates.

    Args:
        ax: the axes.
        xy: the point, in axes coordinates (``(0.5, 0.5)``: the middle of the axes).
        text: the note.
        fontsize: the text size.
        **style: other text options (``va``, ``color``, ``bbox``, ...).
    """
    ax.text(*xy, text, transform=ax.transAxes, ha="center", fontsize=fontsize, **style)


def _placeholder(ax: Axes, text: str) -> None:
    ax.set_facecolor("#f0f0f0")
    ax.set_xticks([])
    ax.set_yticks([])
    _axes_note(ax, (0.5, 0.5), text, 18, va="center", color="#666666")


def _draw_box(
    ax: Axes,
    box: Sequence[float],
    colour: str,
    label: str,
    dashed: bool,
    placed: list[tuple[float, float]],
    size: tuple[int, int],
) -> None:
    """A box and its label inside its top-left corner, moved down past labels already placed."""
    x0, y0, x1, y1 = box
    ax.add_patch(
        Rectangle(
            (x0, y0), x1 - x0, y1 - y0, fill=False, ec=colour, lw=2.2, ls="--" if dashed else "-"
        )
    )
    step_x, step_y = 0.3 * size[0], 0.06 * size[1]
    ly = y0
    while any(abs(ly - py) < step_y and abs(x0 - px) < step_x for px, py in placed):
        ly += step_y
    placed.append((x0, ly))
    ax.text(
        x0 + 1,
        ly + 1,
        label,
        fontsize=8,
        color="white",
        va="top",
        ha="left",
        bbox={"fc": colour, "ec": "none", "alpha": 0.85, "pad": 1.5},
    )


def draw_boxes(
    expl: TweetExplanation,
    path: str | Path,
    picture: tuple[np.ndarray, tuple[int, int]] | None = None,
    gold: bool | None = None,
    dpi: int = DPI,
    compact: bool = False,
) -> Path:
    """Draw the predicted box of each type (and the gold boxes) on the image into a PNG.

    Args:
        expl: the tweet's explanation.
        path: the PNG to write.
        picture: :func:`load_picture` of the sample (None: a "no image" placeholder).
        gold: draw a second panel with the gold boxes (dashed); None: when the sample has any.
        dpi: resolution of the PNG.
        compact: write a 256-colour PNG (see :func:`save_png`).

    Returns:
        ``path``.
    """
    return save_png(boxes_figure(expl, picture, gold), path, dpi, compact)


def boxes_figure(
    expl: TweetExplanation,
    picture: tuple[np.ndarray, tuple[int, int]] | None = None,
    gold: bool | None = None,
) -> Figure:
    """The figure of :func:`draw_boxes` (same arguments but ``path``)."""
    sample = expl.sample
    show_gold = bool(sample.boxes) if gold is None else gold
    n_panels = 2 if show_gold else 1
    fig = Figure(figsize=(4.6 * n_panels, 4.9))
    axes = [fig.add_subplot(1, n_panels, i + 1) for i in range(n_panels)]
    lines: list[str] = []
    for t, al in expl.alignments.items():
        if al.box is None:
            lines.append(f"{t}: -")
        else:
            lines.append(f"{t}: {al.box[1]:.2f}" + ("" if al.grounded else " (not in image)"))
    if picture is None:
        msg = "no image" if sample.image_path is None else "no image\n(unreadable)"
        for ax in axes:
            _placeholder(ax, msg)
        axes[0].set_title("prediction", fontsize=9)
    else:
        pixels, (w, h) = picture
        for ax in axes:
            ax.imshow(pixels, extent=(0, w, h, 0), interpolation="nearest")
            ax.set_xlim(0, w)
            ax.set_ylim(h, 0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0].set_title("prediction (solid)", fontsize=9)
        if not any(al.image_branch for al in expl.alignments.values()):
            _axes_note(
                axes[0],
                (0.5, 0.5),
                "text-only model:\nno boxes",
                14,
                va="center",
                bbox={"fc": "white", "alpha": 0.85, "ec": "#999999"},
            )
        placed: list[tuple[float, float]] = []
        for t, al in expl.alignments.items():
            if al.box is not None and al.grounded:
                bx = al.box[0]
                _draw_box(
                    axes[0],
                    (bx[0] * w, bx[1] * h, bx[2] * w, bx[3] * h),
                    type_colour(t),
                    f"{t} {al.box[1]:.2f}",
                    False,
                    placed,
                    (w, h),
                )
        if show_gold:
            axes[1].set_title("gold (dashed)", fontsize=9)
            placed = []
            for span, boxes in sample.boxes.items():
                for b in boxes:
                    _draw_box(
                        axes[1],
                        (b.xmin, b.ymin, b.xmax, b.ymax),
                        type_colour(span.type),
                        f"{span.type} {span.text(sample.tweet.tokens)}",
                        True,
                        placed,
                        (w, h),
                    )
            n = len(placed)
            if not n:
                _axes_note(
                    axes[1], (0.5, 0.04), "no gold box", 9, bbox={"fc": "white", "alpha": 0.8}
                )
    tokens = sample.tweet.tokens
    ents = ", ".join(f"{sp.text(tokens)} [{sp.type} {sc:.2f}]" for sp, sc in expl.entities)
    fig.suptitle(_wrap(f"tweet {expl.tweet_id}: {' '.join(tokens)}", 80), fontsize=9)
    fig.text(
        0.5,
        0.02,
        _wrap(f"entities: {ents or 'none'}   |   box confidence: " + ", ".join(lines), 110),
        ha="center",
        va="bottom",
        fontsize=8,
    )
    fig.subplots_adjust(left=0.03, right=0.97, top=0.85, bottom=0.14, wspace=0.05)
    return fig


def draw_heatmap(
    al: Alignment,
    path: str | Path,
    picture: tuple[np.ndarray, tuple[int, int]] | None = None,
    dpi: int = DPI,
    compact: bool = False,
) -> Path:
    """One entity's attention over the image regions at each scale, as heat maps over the image.

    The entity is the best predicted one of ``al.type``, else the token with the most peaked
    attention (:meth:`Alignment.focus`); a multi-token entity shows its tokens' mean attention.

    Args:
        al: the alignment.
        path: the PNG to write.
        picture: :func:`load_picture` of the sample (None: drawn without the image).
        dpi: resolution of the PNG.
        compact: write a 256-colour PNG (see :func:`save_png`).

    Returns:
        ``path``.
    """
    return save_png(heatmap_figure(al, picture), path, dpi, compact)


def heatmap_figure(
    al: Alignment, picture: tuple[np.ndarray, tuple[int, int]] | None = None
) -> Figure:
    """The figure of :func:`draw_heatmap` (same arguments but ``path``)."""
    positions, caption = al.focus()
    n = max(al.num_scales, 1)
    fig = Figure(figsize=(3.4 * n + 0.4, 3.9))
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    note = al.note()
    if note or not positions:
        for ax in axes:
            _placeholder(ax, "no image" if al.image_branch and not al.has_image else "-")
        fig.suptitle(f"tweet {al.tweet_id} - {al.type}: {note or 'no token to show'}", fontsize=9)
        return fig
    weights = al.region_weights(positions)
    w, h = picture[1] if picture is not None else (1, 1)
    start = 0
    sizes = al.scale_sizes()
    for level, ax in enumerate(axes):
        n_reg = sizes[level]
        if al.grids:
            rows, cols = al.grids[level]
            heat = weights[start : start + n_reg].reshape(rows, cols)
            label = f"{rows}x{cols}"
        else:  # detected boxes: each drawn as a box, filled by its weight
            heat = weights[start : start + n_reg]
            label = f"{n_reg} boxes"
        scale_regions = al.regions[start : start + n_reg]
        start += n_reg
        if picture is not None:
            ax.imshow(picture[0], extent=(0, w, h, 0), interpolation="nearest")
        lo = float(heat.min()) if heat.size else 0.0  # contrast per scale; the bar gives values
        hi = float(heat.max()) if heat.size else 0.0
        norm = Normalize(vmin=lo if hi - lo > 1e-6 else 0.0, vmax=max(hi, 1e-9))
        if al.grids:
            im: Any = ax.imshow(
                heat,
                extent=(0, w, h, 0),
                cmap=HEAT_CMAP,
                alpha=0.6,
                interpolation="nearest",
                norm=norm,
            )
        else:
            im = ScalarMappable(norm=norm, cmap=HEAT_CMAP)
            for r, v in sorted(zip(scale_regions, heat.tolist(), strict=True), key=lambda t: t[1]):
                colour = colormaps[HEAT_CMAP](float(np.asarray(norm(v))))
                ax.add_patch(_box_patch(r.box, (w, h), fc=colour, ec=colour, alpha=0.45, lw=1.2))
        if al.box is not None and al.grounded:
            ax.add_patch(_box_patch(al.box[0], (w, h), fill=False, ec=type_colour(al.type), lw=1.8))
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_xticks([])
        ax.set_yticks([])
        title = f"s{level + 1} ({label})"
        if n_reg and abs(float(heat.sum()) - 1.0) < 1e-3:  # normalised over this scale's cells
            title += f", uniform = {1 / n_reg:.3g}"
        ax.set_title(title, fontsize=8)
        bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, format="%.3g")
        bar.ax.tick_params(labelsize=6)
    fig.suptitle(
        _wrap(
            f"tweet {al.tweet_id} - {al.type} query: attention of {caption} over the image regions",
            100,
        ),
        fontsize=9,
    )
    return fig
