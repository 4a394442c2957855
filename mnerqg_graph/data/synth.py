"""SynthTweets: the toolkit's embedded, deterministic default data set, where images matter.

``generate(out_dir, seed)`` writes a complete data set in the real on-disk formats (DESIGN.md,
section 3), so the project's own readers are the ones exercised::

    out_dir/
        train.txt  valid.txt  test.txt   CoNLL: IMGID:<id> lines, token<TAB>tag, blank lines
        images/<IMGID>.jpg               square JPEG, ``image_size`` pixels a side
        boxes/<IMGID>.xml                Pascal VOC, one <object> per drawn entity
        synth_meta.json                  parameters, rates, ambiguous mentions, drawn classes

How images matter. Every entity type has a visual class drawn in the images, one shape per type
(:data:`VISUAL_CLASSES`: PER a figure, LOC a mountain, ORG a building, OTHER a star), in random
colours with a dark or light outline, so shape is the cue and colour is not. About 40 % of all
mentions use an **ambiguous** name: an invented string used as two types (say PER and ORG) in
different tweets, always inside a neutral template ("so much talk about {X} today"). A tweet with an
ambiguous mention of true type A always has an image showing one object of A's class where that
entity is, no object of the other candidate's class, and an object for each other entity of the
tweet, whose types are never one of the ambiguous name's candidates. So text alone can only guess
the type of an ambiguous mention, and the image decides it. The other mentions use unambiguous names
(one type each, in type-suggestive or neutral templates), which may or may not be depicted.

Noise: gradient-plus-noise backgrounds, distractor objects of classes that belong to no type
(:data:`DISTRACTOR_CLASSES`), images unrelated to the text (distractors only, no VOC file), tweets
without an image (no image file, no VOC file), tweets without entities, @mentions, #hashtags, URLs,
emoji and casing noise.

Boxes are exact: a box is the bounding box of the pixels drawn for that object, in the continuous
pixel coordinates of the saved image (pixel ``i`` covers ``[i, i + 1)``, so ``xmax``/``ymax`` are
one past the last drawn pixel), as ``PIL.Image.getbbox`` gives it. Entity objects never overlap
each other and are drawn above distractors, so each box is also the object's visible extent.

Determinism: the same seed, sizes and parameters give identical bytes for every file (with the same
numpy and Pillow versions). Each split draws from its own random stream, and the name pool from
another, so the test split of seed 0 does not change when ``n_train`` does. The files hold no time
stamps or paths; JPEGs are written with a fixed quality and no metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from mnerqg_graph.data.conll import write_conll
from mnerqg_graph.data.tags import tags_from_spans
from mnerqg_graph.data.types import Box, Span, Tweet
from mnerqg_graph.data.voc import VocAnnotation, VocObject, format_voc
from mnerqg_graph.errors import ConfigError, DataError
from mnerqg_graph.io import abandon_dir, atomic_write_text, replace_dir, writing

#: Entity types, in the order of the default query file.
TYPES: tuple[str, ...] = ("PER", "LOC", "ORG", "OTHER")
#: The visual class drawn for each entity type.
VISUAL_CLASSES: dict[str, str] = {
    "PER": "figure",
    "LOC": "mountain",
    "ORG": "building",
    "OTHER": "star",
}
#: Classes of distractor objects, which belong to no entity type.
DISTRACTOR_CLASSES: tuple[str, ...] = ("lines", "blob", "checker")
#: Split names, in generation order (their IMGIDs are numbered in this order).
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Name of the metadata file written beside the splits.
META_NAME = "synth_meta.json"
#: Version of the metadata layout.
META_FORMAT = 1
#: Fixed JPEG quality of the saved images.
JPEG_QUALITY = 90

_T = TypeVar("_T")

# ------------------------------------------------------------------------------------------------
# Parameters and results


@dataclass(frozen=True)
class SynthParams:
    """Generation knobs beyond the sizes; the defaults give the documented rates.

    Args:
        p_no_entity: share of tweets without any entity.
        p_ambiguous_tweet: share of tweets with entities that carry one ambiguous mention.
        p_no_image: share of tweets without an ambiguous mention that have no image.
        p_unrelated: share of tweets with entities, no ambiguous mention and an image, whose image
            is unrelated to the text (distractors only). Tweets without entities that have an image
            always have an unrelated one.
        p_depict: chance that an unambiguous entity is drawn in a related image (at least one
            entity of a related image is drawn).
        p_two_boxes: chance that a drawn unambiguous entity gets two objects (two boxes).
        p_suggestive: chance that an unambiguous mention uses a type-suggestive template instead
            of a neutral one (ambiguous mentions always use neutral ones).
        n_ambiguous_names: ambiguous names in the pool, spread evenly over the 6 type pairs.
        n_names_per_type: unambiguous names per type in the pool.
        object_min: smallest side of an entity object's extent, as a share of the image side.
        object_max: largest side of an entity object's extent, as a share of the image side.
    """

    p_no_entity: float = 0.12
    p_ambiguous_tweet: float = 0.6
    p_no_image: float = 0.2
    p_unrelated: float = 0.15
    p_depict: float = 0.7
    p_two_boxes: float = 0.08
    p_suggestive: float = 0.6
    n_ambiguous_names: int = 48
    n_names_per_type: int = 40
    object_min: float = 0.2
    object_max: float = 0.45

    def validate(self) -> None:
        """Raise :class:`ConfigError` when a parameter is out of range."""
        for name in (
            "p_no_entity", "p_ambiguous_tweet", "p_no_image", "p_unrelated", "p_depict",
            "p_two_boxes", "p_suggestive",
        ):  # fmt: skip
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"synth: {name} must be in [0, 1], got {value}")
        if self.n_ambiguous_names < 6:
            raise ConfigError("synth: n_ambiguous_names must be at least 6 (one per type pair)")
        if self.n_names_per_type < 1:
            raise ConfigError("synth: n_names_per_type must be at least 1")
        if not 0.05 <= self.object_min <= self.object_max <= 0.6:
            raise ConfigError("synth: need 0.05 <= object_min <= object_max <= 0.6")


@dataclass
class SynthStats:
    """What :func:`generate` wrote, with the measured rates.

    Attributes:
        out_dir: the data set folder.
        seed: the seed used.
        image_size: side of the saved images in pixels.
        tweets: tweets per split.
        mentions_per_type: entity mentions per type, all splits together.
        mentions: all entity mentions.
        ambiguous_mentions: mentions that use an ambiguous name.
        ambiguous_share: ``ambiguous_mentions / mentions``.
        no_image_share: share of tweets without an image.
        unrelated_image_share: share of images (tweets with an image) that depict no entity.
        mean_distractors_per_image: distractor objects per image.
        depicted_share: share of mentions with at least one box.
        boxes: VOC objects written.
        per_split: the same rates for each split (``{split: {rate: value}}``).
        seconds: wall-clock time of the generation, writing included (not in the metadata file).
    """

    out_dir: Path
    seed: int
    image_size: int
    tweets: dict[str, int]
    mentions_per_type: dict[str, int]
    mentions: int
    ambiguous_mentions: int
    ambiguous_share: float
    no_image_share: float
    unrelated_image_share: float
    mean_distractors_per_image: float
    depicted_share: float
    boxes: int
    per_split: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def rates(self) -> dict[str, Any]:
        """The measured counts and rates as plain JSON values (no path, no time)."""
        return {
            "tweets": dict(self.tweets),
            "mentions_per_type": dict(self.mentions_per_type),
            "mentions": self.mentions,
            "ambiguous_mentions": self.ambiguous_mentions,
            "ambiguous_share": self.ambiguous_share,
            "no_image_share": self.no_image_share,
            "unrelated_image_share": self.unrelated_image_share,
            "mean_distractors_per_image": self.mean_distractors_per_image,
            "depicted_share": self.depicted_share,
            "boxes": self.boxes,
        }


# ------------------------------------------------------------------------------------------------
# Vocabulary: invented names and templates

_ONSETS = (
    "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    "br", "dr", "gr", "kr", "tr", "st", "sk", "th", "sh", "vr", "pl", "kl", "zh",
)  # fmt: skip
_VOWELS = ("a", "e", "i", "o", "u", "y", "ae", "ai", "ei", "ou", "io", "ua")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "x", "th", "nd", "rk", "m", "v")

_LOC_AFFIX = (("Lake", None), ("Mount", None), ("Port", None), ("New", None), (None, "Valley"),
              (None, "City"), (None, "Bay"), (None, "Heights"))  # fmt: skip
_ORG_AFFIX = ((None, "Labs"), (None, "Group"), ("FC", None), (None, "United"), (None, "Records"),
              (None, "Inc"), (None, "Motors"), (None, "News"))  # fmt: skip
_OTHER_AFFIX = ((None, "Cup"), (None, "Awards"), (None, "Expo"), (None, "2"), (None, "Live"),
                (None, "Open"), ("Super", None))  # fmt: skip

#: Templates that fit any type: the only context an ambiguous mention ever gets.
NEUTRAL_TEMPLATES: tuple[str, ...] = (
    "so much talk about {X} today",
    "{X} again !",
    "can't stop thinking about {X}",
    "what do you think about {X} ?",
    "everyone is talking about {X}",
    "{X} !!!",
    "omg {X}",
    "look at {X} right now",
    "this is {X}",
    "more on {X} later",
    "{X} trending again",
    "finally saw {X}",
    "still can't believe {X}",
    "{X} , just wow",
    "big news about {X}",
    "thoughts on {X} ?",
    "new pics of {X}",
    "shoutout to {X}",
    "all eyes on {X}",
    "{X} all day",
)
#: Type-suggestive templates, used only by unambiguous mentions.
TYPE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "PER": (
        "happy birthday {X} !",
        "{X} scored twice tonight",
        "interview with {X} at 9",
        "{X} says she is ready",
        "{X} signs a new contract",
        "congrats to {X} on the award",
        "great speech by {X}",
        "{X} retires after ten seasons",
        "meet {X} , our new coach",
        "{X} and his new album",
    ),
    "LOC": (
        "greetings from {X}",
        "weather in {X} is crazy",
        "flying to {X} tomorrow",
        "traffic jam near {X}",
        "sunset over {X}",
        "snow again in {X}",
        "moving to {X} next month",
        "live from downtown {X}",
        "road trip through {X}",
        "earthquake hits {X}",
    ),
    "ORG": (
        "{X} announces a new ceo",
        "shares of {X} fell 5 %",
        "{X} is hiring engineers",
        "{X} opens a store in town",
        "boycott {X} ?",
        "{X} beat the champions 3 - 1",
        "press release from {X}",
        "{X} recalls 2000 cars",
        "{X} merger talks",
        "applied to {X} today",
    ),
    "OTHER": (
        "watching {X} tonight",
        "the new {X} trailer is out",
        "tickets for {X} sold out",
        "{X} wins best picture",
        "playing {X} all weekend",
        "release date for {X} leaked",
        "learning {X} grammar",
        "{X} week starts monday",
        "listening to {X} on repeat",
        "who else is at {X} ?",
    ),
}
#: Clauses without an entity.
FILLER_CLAUSES: tuple[str, ...] = (
    "good morning everyone",
    "cannot wait for the weekend",
    "this is too funny",
    "so tired today",
    "coffee first",
    "who is up ?",
    "best day ever",
    "lol",
    "need a break",
    "monday again ...",
    "that moment when",
    "rain all day",
    "no words",
    "i'm done",
    "can't even",
)
_JOINERS = (".", "|", "-", "and", "&", ";", "...", ",")
_HASHTAGS = ("#tbt", "#news", "#love", "#travel", "#fail", "#goals", "#mood", "#breaking",
             "#weekend", "#fun", "#photo", "#live")  # fmt: skip
_EMOJI = ("😂", "🔥", "❤️", "😍", "👍", "🙌", "😭", "✨", "👀", "💯")
_SHOUT = ("OMG", "LOL", "WOW", "YES", "NO")
_URL_CHARS = "abcdefghkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789"


def _pick(rng: np.random.Generator, seq: Sequence[_T]) -> _T:
    """A uniformly chosen element of ``seq``."""
    return seq[int(rng.integers(len(seq)))]


def _invented_word(rng: np.random.Generator) -> str:
    """A pronounceable made-up word of 2 or 3 syllables, capitalised like a name."""
    while True:
        n = 2 if rng.random() < 0.65 else 3
        parts = []
        for i in range(n):
            parts.append(_pick(rng, _ONSETS) + _pick(rng, _VOWELS))
            if i == n - 1 or rng.random() < 0.2:
                parts.append(_pick(rng, _CODAS))
        word = "".join(parts)
        if 4 <= len(word) <= 10:
            return word.capitalize()


def _user_handle(rng: np.random.Generator) -> str:
    """An invented @handle."""
    handle = _invented_word(rng).lower()
    if rng.random() < 0.4:
        handle += str(int(rng.integers(1, 100)))
    if rng.random() < 0.2:
        handle += "_" + _invented_word(rng).lower()[:4]
    return "@" + handle


@dataclass(frozen=True)
class _NamePool:
    """Invented names: ambiguous ones with their two candidate types, unambiguous ones per type."""

    ambiguous: tuple[tuple[tuple[str, ...], tuple[str, str]], ...]
    unambiguous: dict[str, tuple[tuple[str, ...], ...]]


def _build_pool(rng: np.random.Generator, params: SynthParams) -> _NamePool:
    """Draw the name pool: distinct strings of 1 to 3 tokens, no invented word in two names."""
    affix_words = {w for pair in (*_LOC_AFFIX, *_ORG_AFFIX, *_OTHER_AFFIX) for w in pair if w}
    used_words: set[str] = set()

    def fresh(make: Any) -> tuple[str, ...]:
        # No invented word is shared by two names (compared lower-cased), so no name is found
        # inside another and every string names one entity of the pool.
        while True:
            name: tuple[str, ...] = make()
            words = {w.lower() for w in name if w not in affix_words and not w.endswith(".")}
            if words and not words & used_words:
                used_words.update(words)
                return name

    def plain() -> tuple[str, ...]:
        if rng.random() < 0.7:
            return (_invented_word(rng),)
        return (_invented_word(rng), _invented_word(rng))

    def affixed(affixes: Sequence[tuple[str | None, str | None]]) -> tuple[str, ...]:
        pre, post = _pick(rng, affixes)
        core = [_invented_word(rng)]
        return tuple(t for t in (pre, *core, post) if t is not None)

    def person() -> tuple[str, ...]:
        u = rng.random()
        if u < 0.25:
            return (_invented_word(rng),)
        if u < 0.85:
            return (_invented_word(rng), _invented_word(rng))
        return (_invented_word(rng), _invented_word(rng)[0] + ".", _invented_word(rng))

    def acronym() -> tuple[str, ...]:
        letters = "BCDFGHKLMNPRSTVXZ"
        return ("".join(_pick(rng, letters) for _ in range(3)),)

    pairs = [(a, b) for i, a in enumerate(TYPES) for b in TYPES[i + 1 :]]
    ambiguous = tuple(
        (fresh(plain), pairs[k % len(pairs)]) for k in range(params.n_ambiguous_names)
    )
    makers: dict[str, Any] = {
        "PER": person,
        "LOC": lambda: plain() if rng.random() < 0.5 else affixed(_LOC_AFFIX),
        "ORG": lambda: (
            acronym()
            if rng.random() < 0.1
            else plain()
            if rng.random() < 0.35
            else affixed(_ORG_AFFIX)
        ),
        "OTHER": lambda: plain() if rng.random() < 0.35 else affixed(_OTHER_AFFIX),
    }
    unambiguous = {
        t: tuple(fresh(makers[t]) for _ in range(params.n_names_per_type)) for t in TYPES
    }
    return _NamePool(ambiguous=ambiguous, unambiguous=unambiguous)


# ------------------------------------------------------------------------------------------------
# Tweets


@dataclass
class _Mention:
    """An entity mention of a drafted tweet."""

    span: Span
    name: str
    ambiguous: bool
    candidates: tuple[str, ...]


@dataclass
class _Draft:
    """A drafted tweet: text, labels, and what its image shows."""

    id: str
    tokens: list[str]
    mentions: list[_Mention]
    image: str  # "none", "unrelated" or "related"
    copies: list[int] = field(default_factory=list)  # objects to draw per mention (0 = not drawn)


#: Weights of the unambiguous types, in TYPES order (people are the commonest, as in real tweets).
_TYPE_WEIGHTS = np.array([0.35, 0.25, 0.2, 0.2])


def _draw_type(rng: np.random.Generator, allowed: Sequence[str]) -> str:
    """An unambiguous entity type from ``allowed``, by :data:`_TYPE_WEIGHTS`."""
    weights = np.array([_TYPE_WEIGHTS[TYPES.index(t)] for t in allowed])
    return allowed[int(rng.choice(len(allowed), p=weights / weights.sum()))]


def _template_tokens(template: str, name: tuple[str, ...] | None) -> tuple[list[str], int]:
    """Tokens of a clause, and the index where the name starts (-1 when there is none)."""
    tokens: list[str] = []
    at = -1
    for word in template.split(" "):
        if word == "{X}":
            assert name is not None
            at = len(tokens)
            tokens.extend(name)
        else:
            tokens.append(word)
    return tokens, at


def _draft_tweet(
    rng: np.random.Generator, pool: _NamePool, params: SynthParams, tweet_id: str
) -> _Draft:
    """Draw one tweet: its clauses, names, labels and what its image will show."""
    # Which names the tweet mentions: (name tokens, true type, ambiguous?, candidates).
    chosen: list[tuple[tuple[str, ...], str, bool, tuple[str, ...]]] = []
    has_ambiguous = False
    if rng.random() >= params.p_no_entity:
        if rng.random() < params.p_ambiguous_tweet:
            has_ambiguous = True
            name, pair = _pick(rng, pool.ambiguous)
            chosen.append((name, _pick(rng, pair), True, pair))
            cands: tuple[str, ...] = pair
            allowed = [t for t in TYPES if t not in cands]
            n_others = int(rng.choice(2, p=[0.6, 0.4]))
        else:
            allowed = list(TYPES)
            n_others = 1 + int(rng.choice(3, p=[0.5, 0.35, 0.15]))
        for _ in range(n_others):
            typ = _draw_type(rng, allowed)
            names = pool.unambiguous[typ]
            name = _pick(rng, names)
            while any(name == c[0] for c in chosen):
                name = _pick(rng, names)
            chosen.append((name, typ, False, (typ,)))

    # Clauses: one per mention, maybe a filler, in random order.
    clauses: list[tuple[list[str], int, int]] = []  # tokens, name start, index into chosen (-1)
    for k, (name, typ, amb, _c) in enumerate(chosen):
        if amb or rng.random() >= params.p_suggestive:
            template = _pick(rng, NEUTRAL_TEMPLATES)
        else:
            template = _pick(rng, TYPE_TEMPLATES[typ])
        toks, at = _template_tokens(template, name)
        clauses.append((toks, at, k))
    n_fillers = (1 + int(rng.integers(2))) if not chosen else int(rng.random() < 0.3)
    for _ in range(n_fillers):
        clauses.append((_template_tokens(_pick(rng, FILLER_CLAUSES), None)[0], -1, -1))
    order = rng.permutation(len(clauses))

    tokens: list[str] = []
    name_at: dict[int, int] = {}
    protected: set[int] = set()
    u = rng.random()
    if u < 0.15:
        tokens += ["RT", _user_handle(rng), ":"]
    elif u < 0.3:
        tokens.append(_user_handle(rng))
    for j, c in enumerate(order):
        toks, at, k = clauses[int(c)]
        if j > 0:
            tokens.append(_pick(rng, _JOINERS))
        if k >= 0:
            name_at[k] = len(tokens) + at
            protected.update(range(len(tokens) + at, len(tokens) + at + len(chosen[k][0])))
        tokens.extend(toks)
    if rng.random() < 0.3:
        tokens.append(_pick(rng, _EMOJI))
        if rng.random() < 0.03:
            tokens.append("\ufe0f")  # a lone variation selector, as in Twitter-2017
    for _ in range(int(rng.choice(3, p=[0.6, 0.3, 0.1]))):
        tokens.append(_pick(rng, _HASHTAGS))
    if rng.random() < 0.15:
        tokens.append("http://t.co/" + "".join(_pick(rng, _URL_CHARS) for _ in range(10)))
    # Casing noise on template words only; names keep their spelling.
    if rng.random() < 0.15 and 0 not in protected and tokens[0].isalpha():
        tokens[0] = tokens[0].capitalize()
    for i, tok in enumerate(tokens):
        if i not in protected and tok.isalpha() and tok.islower() and rng.random() < 0.03:
            tokens[i] = tok.upper()
    if rng.random() < 0.05:  # a shouted word, anywhere but inside a name
        inside = {s + j for k, s in name_at.items() for j in range(1, len(chosen[k][0]))}
        slots = [p for p in range(len(tokens) + 1) if p not in inside]
        at = _pick(rng, slots)
        tokens.insert(at, _pick(rng, _SHOUT))
        name_at = {k: s + 1 if s >= at else s for k, s in name_at.items()}

    mentions = []
    for k, (name, typ, amb, cands) in enumerate(chosen):
        start = name_at[k]
        mentions.append(_Mention(Span(start, start + len(name), typ), " ".join(name), amb, cands))
    mentions.sort(key=lambda m: m.span.start)

    # What the image shows.
    if has_ambiguous:
        image = "related"
    elif rng.random() < params.p_no_image:
        image = "none"
    elif not mentions or rng.random() < params.p_unrelated:
        image = "unrelated"
    else:
        image = "related"
    copies = [0] * len(mentions)
    if image == "related":
        for i in range(len(mentions)):
            if has_ambiguous or rng.random() < params.p_depict:
                copies[i] = 1
        if not any(copies):
            copies[int(rng.integers(len(mentions)))] = 1
        for i, m in enumerate(mentions):
            if copies[i] and not m.ambiguous and rng.random() < params.p_two_boxes:
                copies[i] = 2
    return _Draft(tweet_id, tokens, mentions, image, copies)


# ------------------------------------------------------------------------------------------------
# Images


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """A noisy two-colour gradient with low-frequency blotches (vectorised, no pixel loops).

    The gradient and the blotches are drawn on a 6 x 6 grid and upsampled bilinearly; uniform noise
    of +-16 grey levels is added to every pixel.
    """
    c0 = rng.integers(30, 226, size=3).astype(np.float32)
    c1 = rng.integers(30, 226, size=3).astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    axis = np.linspace(0.0, 1.0, 6, dtype=np.float32)
    t = np.float32(math.cos(angle)) * axis[None, :] + np.float32(math.sin(angle)) * axis[:, None]
    t -= t.min()
    t /= max(float(t.max()), 1e-6)
    coarse = c0 + (c1 - c0) * t[..., None] + rng.normal(0.0, 18.0, size=(6, 6, 3))  # (6, 6, 3)
    base = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB")
    pixels = np.asarray(base.resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16)
    pixels = pixels + rng.integers(-16, 17, size=(size, size, 3), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random RGB colour."""
    r, g, b = (int(v) for v in rng.integers(0, 256, size=3))
    return r, g, b


def _outline_for(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever contrasts with ``fill``."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (15, 15, 15) if luminance > 110 else (245, 245, 245)


#: Width / height of each entity class's extent (its longer side is the drawn size).
_ASPECT = {"figure": 0.6, "mountain": 1.4, "building": 0.65, "star": 1.0}


def _extent(cls: str, side: float) -> tuple[int, int]:
    """Width and height of an object of class ``cls`` whose longer side is ``side`` pixels."""
    aspect = _ASPECT[cls]
    if aspect >= 1.0:
        return round(side), round(side / aspect)
    return round(side * aspect), round(side)


def _draw_entity(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    cls: str,
    box: tuple[int, int, int, int],
    line: int,
) -> None:
    """Draw an entity object of class ``cls`` inside ``box`` = (x0, y0, w, h)."""
    x0, y0, w, h = box
    x1, y1 = x0 + w - 1, y0 + h - 1
    fill = _colour(rng)
    edge = _outline_for(fill)
    if cls == "figure":
        r = 0.28 * h
        r = min(r, 0.5 * w)
        cx = x0 + w / 2
        gap = max(1.0, 0.03 * h)
        top = y0 + 2 * r + gap
        body = [(x0 + 0.18 * w, top), (x1 - 0.18 * w, top), (x1, y1), (x0, y1)]
        draw.polygon(body, fill=fill, outline=edge, width=line)
        draw.ellipse((cx - r, y0, cx + r, y0 + 2 * r), fill=fill, outline=edge, width=line)
    elif cls == "mountain":
        apex = x0 + float(rng.uniform(0.35, 0.65)) * (w - 1)
        draw.polygon([(x0, y1), (apex, y0), (x1, y1)], fill=fill, outline=edge, width=line)
        f = 0.32
        left = (apex + (x0 - apex) * f, y0 + (y1 - y0) * f)
        right = (apex + (x1 - apex) * f, y0 + (y1 - y0) * f)
        mid = (apex, y0 + (y1 - y0) * f * 0.7)
        draw.polygon([(apex, y0), right, mid, left], fill=(240, 240, 240), outline=edge)
    elif cls == "building":
        draw.rectangle((x0, y0, x1, y1), fill=fill, outline=edge, width=line)
        cols = 2 + int(rng.integers(2))
        rows = 3 + int(rng.integers(3))
        window = _outline_for(fill)
        mx, my = 0.18 * w, 0.1 * h
        cw = (w - 2 * mx) / cols
        ch = (h - 2 * my) / rows
        for i in range(cols):
            for j in range(rows):
                wx, wy = x0 + mx + i * cw, y0 + my + j * ch
                draw.rectangle(
                    (wx + 0.2 * cw, wy + 0.2 * ch, wx + 0.8 * cw, wy + 0.75 * ch), fill=window
                )
    elif cls == "star":
        cx, cy = x0 + (w - 1) / 2, y0 + (h - 1) / 2
        outer = (min(w, h) - 1) / 2
        inner = outer * 0.45
        rot = float(rng.uniform(-0.3, 0.3)) - math.pi / 2
        points = [
            (
                cx + (outer if k % 2 == 0 else inner) * math.cos(rot + k * math.pi / 5),
                cy + (outer if k % 2 == 0 else inner) * math.sin(rot + k * math.pi / 5),
            )
            for k in range(10)
        ]
        draw.polygon(points, fill=fill, outline=edge, width=line)
    else:  # pragma: no cover - classes come from VISUAL_CLASSES
        raise ValueError(f"unknown entity class {cls!r}")


def _draw_distractor(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cls: str, box: tuple[int, int, int, int]
) -> None:
    """Draw a distractor object of class ``cls`` inside ``box`` = (x0, y0, w, h)."""
    x0, y0, w, h = box
    if cls == "lines":
        for _ in range(2 + int(rng.integers(3))):
            xa, xb = (float(v) for v in rng.uniform(x0, x0 + w, size=2))
            ya, yb = (float(v) for v in rng.uniform(y0, y0 + h, size=2))
            draw.line((xa, ya, xb, yb), fill=_colour(rng), width=1 + int(rng.integers(3)))
    elif cls == "blob":
        grey = int(rng.integers(70, 200))
        cx, cy = x0 + w / 2, y0 + h / 2
        n = 7 + int(rng.integers(5))
        radii = rng.uniform(0.6, 1.0, size=n)
        points = [
            (
                cx + radii[k] * w / 2 * math.cos(2 * math.pi * k / n),
                cy + radii[k] * h / 2 * math.sin(2 * math.pi * k / n),
            )
            for k in range(n)
        ]
        draw.polygon(points, fill=(grey, grey, grey))
    elif cls == "checker":
        cells = 3 + int(rng.integers(3))
        a, b = _colour(rng), _colour(rng)
        cw, ch = max(2, w // cells), max(2, h // cells)  # whole pixels, at least 2
        for i in range(cells):
            for j in range(cells):
                draw.rectangle(
                    (x0 + i * cw, y0 + j * ch, x0 + (i + 1) * cw - 1, y0 + (j + 1) * ch - 1),
                    fill=a if (i + j) % 2 == 0 else b,
                )
    else:  # pragma: no cover - classes come from DISTRACTOR_CLASSES
        raise ValueError(f"unknown distractor class {cls!r}")


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    """Whether boxes (x0, y0, w, h) ``a`` and ``b`` come closer than ``gap`` pixels."""
    return not (
        a[0] + a[2] + gap <= b[0]
        or b[0] + b[2] + gap <= a[0]
        or a[1] + a[3] + gap <= b[1]
        or b[1] + b[3] + gap <= a[1]
    )


def _place(
    rng: np.random.Generator,
    classes: list[str],
    size: int,
    lo: float,
    hi: float,
) -> list[tuple[int, int, int, int]]:
    """Non-overlapping placements (x0, y0, w, h) for entity objects of ``classes``."""
    margin = max(4, size // 32)  # at least the drawing pad of _render
    gap = max(2, size // 40)
    hi = max(lo, min(hi, hi - 0.05 * (len(classes) - 1)))
    for attempt in range(40):
        shrink = 0.9 ** (attempt // 4)
        placed: list[tuple[int, int, int, int]] = []
        for cls in classes:
            for _ in range(30):
                side = float(rng.uniform(lo, hi)) * shrink * size
                w, h = _extent(cls, side)
                x = int(rng.integers(margin, size - margin - w + 1))
                y = int(rng.integers(margin, size - margin - h + 1))
                cand = (x, y, w, h)
                if not any(_overlaps(cand, p, gap) for p in placed):
                    placed.append(cand)
                    break
            else:
                break
        if len(placed) == len(classes):
            return placed
    raise AssertionError(f"cannot place {len(classes)} objects in {size} px")  # pragma: no cover


@dataclass
class _Rendered:
    """An image and what is in it."""

    jpeg: bytes
    boxes: list[tuple[int, Box]]  # (mention index, box)
    classes: list[str]  # every drawn class, entity objects first, in drawing order of each group


def _render(rng: np.random.Generator, draft: _Draft, size: int, params: SynthParams) -> _Rendered:
    """Draw the image of ``draft`` (which has one) and measure the boxes of its entity objects."""
    canvas = _background(rng, size)
    owners = [i for i, n in enumerate(draft.copies) for _ in range(n)]
    classes = [VISUAL_CLASSES[draft.mentions[i].span.type] for i in owners]
    order = rng.permutation(len(owners))
    owners = [owners[int(k)] for k in order]
    classes = [classes[int(k)] for k in order]
    spots = _place(rng, classes, size, params.object_min, params.object_max)

    n_distractors = 1 + int(rng.integers(4)) if draft.image == "unrelated" else int(rng.integers(3))
    draw = ImageDraw.Draw(canvas)
    distractors: list[str] = []
    for _ in range(n_distractors):
        cls = _pick(rng, DISTRACTOR_CLASSES)
        spot = (0, 0, 0, 0)
        for _try in range(20):  # keep clear of entity objects when there is room
            w = int(rng.integers(max(4, size // 10), max(5, size * 3 // 10)))
            h = int(rng.integers(max(4, size // 10), max(5, size * 3 // 10)))
            spot = (int(rng.integers(0, size - w)), int(rng.integers(0, size - h)), w, h)
            if not any(_overlaps(spot, p, 1) for p in spots):
                break
        _draw_distractor(draw, rng, cls, spot)
        distractors.append(cls)

    line = max(1, round(size / 64))
    boxes: list[tuple[int, Box]] = []
    for owner, cls, spot in zip(owners, classes, spots, strict=True):
        # Drawn on its own transparent layer (spot plus a margin), so its pixels can be measured.
        x0, y0, w, h = spot
        pad = line + 2
        layer = Image.new("RGBA", (w + 2 * pad, h + 2 * pad), (0, 0, 0, 0))
        _draw_entity(ImageDraw.Draw(layer), rng, cls, (pad, pad, w, h), line)
        bbox = layer.getchannel("A").getbbox()
        assert bbox is not None
        canvas.paste(layer, (x0 - pad, y0 - pad), layer)
        left, top, right, bottom = (x0 - pad + bbox[0], y0 - pad + bbox[1],
                                    x0 - pad + bbox[2], y0 - pad + bbox[3])  # fmt: skip
        assert 0 <= left < right <= size and 0 <= top < bottom <= size
        boxes.append((owner, Box(float(left), float(top), float(right), float(bottom))))

    buf = BytesIO()
    canvas.save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
    return _Rendered(buf.getvalue(), boxes, classes + distractors)


# ------------------------------------------------------------------------------------------------
# Generation


def _split_seed(seed: int, stream: int) -> np.random.Generator:
    """An independent random stream: 0 for the name pool, 1 + split index for each split."""
    return np.random.default_rng([seed, 0x5EED, stream])


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that is not empty and is not a SynthTweets set."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(f"synth: {out_dir} exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / META_NAME).is_file():
            raise ConfigError(
                f"synth: {out_dir} is not empty and holds no {META_NAME}; "
                "choose an empty or new folder"
            )


def _rate(num: float, den: float) -> float:
    """``num / den`` rounded for the metadata file (0 when ``den`` is 0)."""
    return round(num / den, 6) if den else 0.0


@dataclass
class _Counts:
    """What one split (or all of them) holds."""

    tweets: int = 0
    mentions: int = 0
    ambiguous: int = 0
    depicted: int = 0
    boxes: int = 0
    images: int = 0
    unrelated: int = 0
    distractors: int = 0
    per_type: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TYPES, 0))

    def add(self, other: _Counts) -> None:
        """Add ``other``'s counts to these."""
        for name in ("tweets", "mentions", "ambiguous", "depicted", "boxes", "images",
                     "unrelated", "distractors"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for t, n in other.per_type.items():
            self.per_type[t] = self.per_type.get(t, 0) + n

    def rates(self) -> dict[str, Any]:
        """Counts and rates for the metadata file and :class:`SynthStats`."""
        return {
            "tweets": self.tweets,
            "mentions": self.mentions,
            "mentions_per_type": dict(self.per_type),
            "ambiguous_mentions": self.ambiguous,
            "ambiguous_share": _rate(self.ambiguous, self.mentions),
            "no_image_share": _rate(self.tweets - self.images, self.tweets),
            "unrelated_image_share": _rate(self.unrelated, self.images),
            "mean_distractors_per_image": _rate(self.distractors, self.images),
            "depicted_share": _rate(self.depicted, self.mentions),
            "boxes": self.boxes,
        }


def _write_split(
    folder: Path,
    split: str,
    ids: range,
    rng: np.random.Generator,
    pool: _NamePool,
    params: SynthParams,
    image_size: int,
) -> tuple[_Counts, dict[str, Any]]:
    """Draft, draw and write the tweets of one split into ``folder``.

    Returns:
        The split's counts, and its entry of the metadata file's ``splits`` object.
    """
    counts = _Counts()
    tweets: list[Tweet] = []
    ambiguous: list[list[Any]] = []
    objects: dict[str, list[str]] = {}
    for number in ids:
        tweet_id = f"synth_{number:06d}"
        draft = _draft_tweet(rng, pool, params, tweet_id)
        _check_tokens(draft.tokens, tweet_id)
        spans = [m.span for m in draft.mentions]
        tweets.append(Tweet(tweet_id, draft.tokens, tags_from_spans(len(draft.tokens), spans)))
        counts.tweets += 1
        counts.mentions += len(spans)
        for m in draft.mentions:
            counts.per_type[m.span.type] += 1
            if m.ambiguous:
                counts.ambiguous += 1
                ambiguous.append([tweet_id, m.span.start, m.span.end])
        if draft.image == "none":
            continue
        rendered = _render(rng, draft, image_size, params)
        (folder / "images" / f"{tweet_id}.jpg").write_bytes(rendered.jpeg)
        objects[tweet_id] = rendered.classes
        counts.images += 1
        counts.unrelated += not rendered.boxes
        counts.distractors += sum(k in DISTRACTOR_CLASSES for k in rendered.classes)
        counts.depicted += len({owner for owner, _ in rendered.boxes})
        counts.boxes += len(rendered.boxes)
        if rendered.boxes:
            ordered = sorted(rendered.boxes, key=lambda ob: (ob[0], ob[1].xmin, ob[1].ymin))
            ann = VocAnnotation(
                f"{tweet_id}.jpg",
                image_size,
                image_size,
                [VocObject(draft.mentions[owner].name, box) for owner, box in ordered],
            )
            # format_voc is write_voc without its per-file fsync: the whole folder is moved into
            # place at the end, which is what makes the data set appear atomically.
            (folder / "boxes" / f"{tweet_id}.xml").write_bytes(format_voc(ann).encode("utf-8"))
    write_conll(folder / f"{split}.txt", tweets, trailing_blank=True)
    return counts, {"ambiguous": ambiguous, "image_objects": objects, "rates": counts.rates()}


def generate(
    out_dir: str | Path,
    seed: int = 0,
    n_train: int = 2000,
    n_valid: int = 400,
    n_test: int = 400,
    image_size: int = 128,
    params: SynthParams | None = None,
) -> SynthStats:
    """Write the SynthTweets data set into ``out_dir``.

    The set is written into a temporary folder beside ``out_dir`` and moved into place at the end,
    so ``out_dir`` holds either the old or the new complete set. An existing ``out_dir`` is
    replaced only when it is empty or is itself a SynthTweets set (holds ``synth_meta.json``).

    Args:
        out_dir: the data set folder (created).
        seed: the random seed; the same seed and arguments give byte-identical files.
        n_train: tweets in ``train.txt``.
        n_valid: tweets in ``valid.txt``.
        n_test: tweets in ``test.txt``.
        image_size: side of the saved square JPEG images, in pixels (at least 32).
        params: generation knobs; :class:`SynthParams` defaults when None.

    Returns:
        The counts and measured rates (also written to ``synth_meta.json``) and the time taken.

    Raises:
        ConfigError: a size or parameter is out of range, or ``out_dir`` is a non-empty folder
            that is not a SynthTweets set.
    """
    started = time.perf_counter()
    params = params or SynthParams()
    params.validate()
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigError(f"synth: the number of {split} tweets must be >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"synth: the seed must be an integer >= 0, got {seed!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
        raise ConfigError(f"synth: image_size must be an integer >= 32, got {image_size!r}")
    out = Path(out_dir)
    _check_out_dir(out)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)

    pool = _build_pool(_split_seed(seed, 0), params)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if tmp.exists():  # left by a crashed run of a process with our pid
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()  # a write error below names the file of out that failed
        (tmp / "images").mkdir()
        (tmp / "boxes").mkdir()
        split_meta: dict[str, dict[str, Any]] = {}
        counts: dict[str, _Counts] = {}
        total = _Counts()
        first = 0
        for index, split in enumerate(SPLITS):
            ids = range(first, first + sizes[split])
            first = ids.stop
            counts[split], split_meta[split] = _write_split(
                tmp, split, ids, _split_seed(seed, 1 + index), pool, params, image_size
            )
            total.add(counts[split])
        overall = total.rates()
        meta = {
            "format": META_FORMAT,
            "generator": "mnerqg_graph.data.synth",
            "params": {
                "seed": seed,
                "n_train": n_train,
                "n_valid": n_valid,
                "n_test": n_test,
                "image_size": image_size,
                "jpeg_quality": JPEG_QUALITY,
                **asdict(params),
            },
            "types": list(TYPES),
            "visual_classes": dict(VISUAL_CLASSES),
            "distractor_classes": list(DISTRACTOR_CLASSES),
            "box_convention": "pixel edges of the saved image; xmax/ymax one past the last pixel",
            "ambiguous_names": {" ".join(name): list(cands) for name, cands in pool.ambiguous},
            "rates": {**overall, "tweets": {s: counts[s].tweets for s in SPLITS}},
            "splits": split_meta,
        }
        atomic_write_text(
            tmp / META_NAME, json.dumps(meta, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        )
        replace_dir(tmp, out, META_NAME)
    except BaseException as exc:
        abandon_dir(tmp, out, exc)
        raise

    return SynthStats(
        out_dir=out,
        seed=seed,
        image_size=image_size,
        tweets={s: counts[s].tweets for s in SPLITS},
        mentions_per_type=dict(total.per_type),
        mentions=total.mentions,
        ambiguous_mentions=total.ambiguous,
        ambiguous_share=overall["ambiguous_share"],
        no_image_share=overall["no_image_share"],
        unrelated_image_share=overall["unrelated_image_share"],
        mean_distractors_per_image=overall["mean_distractors_per_image"],
        depicted_share=overall["depicted_share"],
        boxes=total.boxes,
        per_split={s: split_meta[s]["rates"] for s in SPLITS},
        seconds=time.perf_counter() - started,
    )


def _check_tokens(tokens: list[str], tweet_id: str) -> None:
    """Every token must be non-empty and free of whitespace (a generator bug otherwise)."""
    for tok in tokens:
        if not tok or any(ch.isspace() for ch in tok):
            raise AssertionError(f"{tweet_id}: bad token {tok!r}")


def load_ambiguous(meta_path: str | Path) -> dict[str, set[tuple[str, int, int]]]:
    """The ambiguous mentions listed in a ``synth_meta.json``.

    Args:
        meta_path: the metadata file, or the data set folder that holds it.

    Returns:
        Split name -> set of ``(tweet id, span start, span end)``, spans half-open over the tweet's
        tokens (the :class:`~mnerqg_graph.data.types.Span` convention).

    Raises:
        DataError: the file is missing, not JSON, or does not have the expected layout.
    """
    path = Path(meta_path)
    if path.is_dir():
        path = path / META_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(path, "no such file") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read: {exc}") from exc
    splits = meta.get("splits") if isinstance(meta, dict) else None
    if not isinstance(splits, dict):
        raise DataError(path, "expected an object with a 'splits' object", field="splits")
    result: dict[str, set[tuple[str, int, int]]] = {}
    for split, entry in splits.items():
        items = entry.get("ambiguous") if isinstance(entry, dict) else None
        if not isinstance(items, list):
            raise DataError(path, "expected a list", field=f"splits.{split}.ambiguous")
        mentions: set[tuple[str, int, int]] = set()
        for k, item in enumerate(items):
            ok = (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:])
                and 0 <= item[1] < item[2]
            )
            if not ok:
                raise DataError(
                    path,
                    f"expected [tweet_id, start, end] with 0 <= start < end, got {item!r}",
                    field=f"splits.{split}.ambiguous[{k}]",
                )
            mentions.add((item[0], item[1], item[2]))
        result[split] = mentions
    return result


# ------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``mnerqg synth``."""
    defaults = generate.__defaults__ or ()
    seed, n_train, n_valid, n_test, image_size = defaults[:5]
    parser = argparse.ArgumentParser(
        prog="mnerqg synth",
        description=(
            "Write the SynthTweets data set: CoNLL splits, JPEG images, VOC boxes and "
            f"{META_NAME}. The same seed gives byte-identical files."
        ),
        allow_abbrev=False,
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=seed, help="random seed (default %(default)s)")
    parser.add_argument("--train", type=int, default=n_train, metavar="N",
                        help="training tweets (default %(default)s)")  # fmt: skip
    parser.add_argument("--valid", type=int, default=n_valid, metavar="N",
                        help="validation tweets (default %(default)s)")  # fmt: skip
    parser.add_argument("--test", type=int, default=n_test, metavar="N",
                        help="test tweets (default %(default)s)")  # fmt: skip
    parser.add_argument("--image-size", type=int, default=image_size, metavar="PX",
                        help="image side in pixels (default %(default)s)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mnerqg synth``.

    Args:
        argv: the command's arguments (after ``synth``); ``sys.argv[1:]`` when None.

    Returns:
        The exit code, 0 on success. User errors are raised as
        :class:`~mnerqg_graph.errors.MnerqgError` for the CLI to print.
    """
    args = build_parser().parse_args(argv)
    stats = generate(
        args.out,
        seed=args.seed,
        n_train=args.train,
        n_valid=args.valid,
        n_test=args.test,
        image_size=args.image_size,
    )
    types = ", ".join(f"{t} {n}" for t, n in stats.mentions_per_type.items())
    print(
        f"SynthTweets (seed {stats.seed}) written to {stats.out_dir} in {stats.seconds:.1f} s\n"
        f"  tweets: {', '.join(f'{s} {n}' for s, n in stats.tweets.items())}\n"
        f"  mentions: {stats.mentions} ({types})\n"
        f"  ambiguous mentions: {stats.ambiguous_share:.1%}; depicted mentions: "
        f"{stats.depicted_share:.1%}; boxes: {stats.boxes}\n"
        f"  tweets without image: {stats.no_image_share:.1%}; unrelated images: "
        f"{stats.unrelated_image_share:.1%}; distractors per image: "
        f"{stats.mean_distractors_per_image:.2f}"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
