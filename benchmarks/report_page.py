r"""How fast the ``mnerqg report`` page opens in headless Chromium, and its screenshot.

Usage::

    python -m benchmarks.report_page [--tweets 1500] [--images | --no-images] [--repeat 5]
        [--data DIR --split valid] [--work DIR] [--json]
    python -m benchmarks.report_page --html report.html --repeat 0 \
        --screenshot docs/images/report_example.png [--hash "select=ID&graph=PER"] [--hover N]

Without ``--html`` it builds a page first: a SynthTweets split of ``--tweets`` tweets (generated
under ``WORK``, 128 px images; ``--no-images`` drops them) or ``--data``'s split, and a tiny
*random* model with the ``fast`` config's sizes (the benchmark measures the page, not the model;
its span bias is set so that it predicts some entities). Reported: the time to build the data and
the HTML, the file size, and per repeat a fresh page load (new browser, new profile) in headless
Chromium: the page's own ``data-ready-ms`` (``performance.now()`` when the page has drawn itself,
i.e. milliseconds since navigation started), ``data-painted-ms`` (the first frame after that), the
wall time from ``Page.navigate`` until ``data-ready`` is seen, and two interactions: filtering all
tweets by a kind (``filter_ms``) and selecting a tweet, which draws its image and graph
(``select_ms``); median and min-max. Every load also checks that the console has no errors, that
the page requested nothing but itself and data URIs, and that the selected tweet has a graph.

``--screenshot PNG`` saves the viewport after the last load (``--hash`` sets the view, e.g.
``kind=missed&select=ID&graph=PER``; ``--hover N`` hovers the N-th token of the graph to show its
attention; ``--compact`` writes a 256-colour PNG).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: True once the report page has drawn itself (also while the previous page is still there).
READY = "!!document.documentElement && document.documentElement.dataset.ready === '1'"
#: The ids of every tweet of the page (its data block, parsed again).
DATA_TWEETS_JS = (
    "JSON.parse(document.getElementById('report-data').textContent).tweets.map(t => t.id)"
)


def _log(msg: str) -> None:
    print(f"[report_page] {msg}", file=sys.stderr, flush=True)


def tiny_checkpoint(
    train_tokens: list[list[str]],
    out_dir: str | Path,
    seed: int = 0,
    use_image: bool = True,
    span_bias: float | None = -0.15,
    **config: Any,
) -> Path:
    """Save a tiny random model (the ``fast`` config's sizes) as a checkpoint.

    Args:
        train_tokens: token lists the tiny encoder's vocabulary covers (and the queries).
        out_dir: the checkpoint folder (its parent holds the encoder too).
        seed: seeds the encoder and the model's initialisation.
        use_image: build the image branch (False: ``fusion=none``, text-only).
        span_bias: the span heads' start/end output bias (None: as initialised); -0.15 makes
            a random model predict a few spans per tweet, some right, most wrong.
        **config: other :class:`~mnerqg_graph.config.ModelConfig` settings by section
            (``heads={"tag_head": True}``: merged into the section's tiny values).

    Returns:
        The checkpoint folder.
    """
    import torch
    from transformers import AutoTokenizer

    from mnerqg_graph.bench.throughput import set_span_bias
    from mnerqg_graph.config import ModelConfig
    from mnerqg_graph.data.queries import load_queries
    from mnerqg_graph.encoders.tiny import build_tiny_encoder
    from mnerqg_graph.model import build_model
    from mnerqg_graph.training.checkpoint import save_model

    out = Path(out_dir)
    queries = load_queries()
    corpus = [*train_tokens, *(q.split() for q in queries.values())]
    enc = build_tiny_encoder(
        out.parent / f"{out.name}-encoder",
        corpus,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        seed=seed,
    )
    sections: dict[str, dict[str, Any]] = {
        "encoder": {"name": str(enc), "casing_dim": 4},
        "graph": {"hidden_dim": 32},
        "fusion": {"layers": 1, "kwargs": {"heads": 2}},
        "image": {"backbone_kwargs": {"width": 8, "out_channels": 16, "min_stride": 16}},
    }
    if not use_image:
        sections["fusion"].update(name="none", kwargs={})
        sections["image"]["use_image"] = False
    for name, values in config.items():
        sections.setdefault(name, {}).update(values)
    cfg = ModelConfig(types=list(queries), **sections)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    if span_bias is not None:
        set_span_bias(model, span_bias)
    return save_model(model, cfg, queries, AutoTokenizer.from_pretrained(str(enc)), out)


def build_page(args: argparse.Namespace, work: Path) -> tuple[Path, dict[str, Any]]:
    """Data, a tiny random checkpoint and the report page; the page and what it took."""
    from mnerqg_graph.data.dataset import load_split
    from mnerqg_graph.data.synth import generate
    from mnerqg_graph.report.cli import main as report_main

    if args.data:
        root, split = Path(args.data), args.split
    else:
        root, split = work / f"synth-{args.tweets}", "valid"
        if not (root / "valid.txt").is_file():
            _log(f"generating SynthTweets with {args.tweets} validation tweets under {root}")
            generate(root, seed=0, n_train=200, n_valid=args.tweets, n_test=0, image_size=128)
    train = (
        load_split(root, "train", strict=False).samples if (root / "train.txt").is_file() else []
    )
    tokens = [s.tweet.tokens for s in train] or [
        s.tweet.tokens for s in load_split(root, split, strict=False).samples
    ]
    ckpt = tiny_checkpoint(
        tokens, work / "checkpoint", use_image=args.images, span_bias=args.span_bias
    )
    if not args.images:  # the split's text alone: a text-only data set
        text_only = work / "text-only"
        text_only.mkdir(exist_ok=True)
        src = load_split(root, split, strict=False).report.path
        (text_only / Path(src).name).write_bytes(Path(src).read_bytes())
        root = text_only
    page = work / "report.html"
    argv = ["--checkpoint", str(ckpt), "--data", str(root), "--split", split, "--out", str(page)]
    argv += ["--device", "cpu"]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    _log("mnerqg " + " ".join(["report", *argv]))
    started = time.perf_counter()
    report_main(argv)
    return page, {"build_seconds": time.perf_counter() - started, "data": str(root), "split": split}


def load_once(page: Path, hash_: str, timeout: float) -> tuple[dict[str, Any], Any]:
    """One fresh page load; the timings and the still open browser."""
    from mnerqg_graph.report.browser import HeadlessChromium, page_state

    browser = HeadlessChromium(timeout=timeout)
    try:
        url = page.resolve().as_uri() + (f"#{hash_}" if hash_ else "")
        t0 = time.perf_counter()
        browser.send("Page.navigate", url=url)
        browser.wait_for(READY, poll=0.005)
        wall = 1000 * (time.perf_counter() - t0)
        ready_ms = float(browser.evaluate("document.documentElement.dataset.readyMs"))
        painted_ms = float(browser.wait_for("document.documentElement.dataset.paintedMs"))
        # interactions: a filter over every tweet, then selecting a tweet (its graph drawn)
        filter_ms = browser.evaluate(
            "(() => { const t0 = performance.now();"
            " document.querySelector('#kind-filter [data-kind=errors]').click();"
            " return performance.now() - t0; })()"
        )
        select_ms = browser.evaluate(
            "(() => { const li = document.querySelector('li.tweet'); const t0 = performance.now();"
            " li.click(); return performance.now() - t0; })()"
        )
        state = page_state(browser)
        errors = browser.console_errors() + state.get("errors", [])
        foreign = [
            u for u in browser.requests() if not u.startswith(("data:", page.resolve().as_uri()))
        ]
        if errors or foreign:
            raise RuntimeError(f"page errors {errors[:3]}, requests {foreign[:3]}")
        if not state.get("svgNodes"):
            raise RuntimeError("selecting a tweet drew no graph")
        timings = {
            "ready_ms": ready_ms,
            "painted_ms": painted_ms,
            "wall_ms": wall,
            "filter_ms": float(filter_ms),
            "select_ms": float(select_ms),
            "tweets": len(browser.evaluate(DATA_TWEETS_JS)),
        }
        return timings, browser
    except BaseException:
        browser.close()
        raise


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--html", help="an existing report page (skips building one)")
    ap.add_argument("--tweets", type=int, default=1500, help="SynthTweets validation tweets")
    ap.add_argument("--data", help="a data-set folder instead of SynthTweets")
    ap.add_argument("--split", default="valid")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument(
        "--span-bias",
        type=float,
        default=-0.15,
        help="the random model's span-head bias (higher: more predicted entities)",
    )
    img = ap.add_mutually_exclusive_group()
    img.add_argument("--images", dest="images", action="store_true", default=True)
    img.add_argument("--no-images", dest="images", action="store_false")
    ap.add_argument("--repeat", type=int, default=5, help="fresh page loads timed (0: none)")
    ap.add_argument("--work", help="working folder (default: a temporary one)")
    ap.add_argument("--screenshot", help="save a PNG of the page after the last load")
    ap.add_argument("--hash", default="", help="view for the screenshot, e.g. select=ID")
    ap.add_argument("--hover", type=int, default=None, help="hover the N-th token of the graph")
    ap.add_argument("--compact", action="store_true", help="256-colour screenshot")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=900)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="report-page-"))
    work.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {}
    if args.html:
        page = Path(args.html)
    else:
        page, info = build_page(args, work)
    info["bytes"] = page.stat().st_size
    loads: list[dict[str, Any]] = []
    for k in range(args.repeat):
        got, browser = load_once(page, "", args.timeout)
        browser.close()
        loads.append(got)
        _log(
            f"load {k + 1}: ready {got['ready_ms']:.0f} ms, painted {got['painted_ms']:.0f} ms, "
            f"wall {got['wall_ms']:.0f} ms; filter {got['filter_ms']:.0f} ms, "
            f"select {got['select_ms']:.0f} ms"
        )
    if loads:
        for key in ("ready_ms", "painted_ms", "wall_ms", "filter_ms", "select_ms"):
            values = [x[key] for x in loads]
            info[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
        info["tweets"] = loads[0]["tweets"]
    if args.screenshot:
        from mnerqg_graph.report.browser import HeadlessChromium

        with HeadlessChromium(width=args.width, height=args.height, timeout=args.timeout) as b:
            url = page.resolve().as_uri() + (f"#{args.hash}" if args.hash else "")
            b.open(url)
            b.wait_for(READY)
            if args.hover is not None:
                b.evaluate(
                    "document.querySelectorAll('#detail svg.graph .node.token')"
                    f"[{args.hover}].dispatchEvent(new MouseEvent('mouseenter'))"
                )
            if errors := b.console_errors():
                raise RuntimeError(f"page errors: {errors[:3]}")
            shot = b.screenshot(args.screenshot)
        if args.compact:
            from PIL import Image

            with Image.open(shot) as im:
                im.convert("RGB").quantize(256).save(shot, optimize=True)
        info["screenshot"] = str(shot)
        _log(f"screenshot {shot} ({shot.stat().st_size / 1e3:.0f} kB)")
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
