"""The reference row of ``mnerqg bench``: the same text encoder as a plain BIO tagger.

What MNER-QG's peers run (BERT-CRF without the CRF): one encoder pass per tweet, a linear layer
over the word pieces, argmax, and each original token takes the tag of its first piece. It is timed
end to end like the model (tokenisation and word-tag decoding included), so the ratio of the two is
what the MRC formulation costs over the plain formulation on the same encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mnerqg_graph.data.collate import bio_tag_names
from mnerqg_graph.encoders.features import encoder_words
from mnerqg_graph.encoders.text import HFTextEncoder


@dataclass
class TaggerBatch:
    """Padded inputs of a batch of tweets.

    Attributes:
        input_ids: ``[B, L]`` ``[CLS] tweet [SEP]`` word pieces.
        attention_mask: ``[B, L]``.
        first_piece: ``[B, W]`` position of each token's first piece, -1: none (cut or invisible).
        labels: ``[B, W]`` gold tag ids (-100 where the token has no piece or no gold).
    """

    input_ids: Tensor
    attention_mask: Tensor
    first_piece: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> TaggerBatch:
        """A copy on ``device``."""
        return TaggerBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.first_piece.to(device),
            self.labels.to(device),
        )


class PlainTagger(nn.Module):
    """A text encoder and one linear layer over its word pieces.

    Args:
        encoder: a local Hugging Face model directory.
        types: entity types (tags ``O``, then ``B-t``, ``I-t`` per type, as the tagger head).
        max_length: word pieces per sequence, specials included.
        url_word: read URL tokens as this word (as the model does; ``""``: as they are).
    """

    def __init__(
        self, encoder: str, types: Sequence[str], max_length: int = 128, url_word: str = ""
    ) -> None:
        super().__init__()
        self.encoder = HFTextEncoder(encoder)
        self.tags = bio_tag_names(types)
        self.index = {t: i for i, t in enumerate(self.tags)}
        self.out = nn.Linear(self.encoder.output_dim, len(self.tags))
        self.max_length = max_length
        self.url_word = url_word

    def encode(self, tokenizer: Any, tweets: Sequence[Any]) -> TaggerBatch:
        """Tokenise a batch of tweets (one batched call) and align pieces to tokens."""
        enc = tokenizer(
            [encoder_words(t.tokens, self.url_word) for t in tweets],
            is_split_into_words=True,
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        )
        width = max(max((len(t.tokens) for t in tweets), default=1), 1)
        first = torch.full((len(tweets), width), -1, dtype=torch.long)
        labels = torch.full((len(tweets), width), -100, dtype=torch.long)
        for b, tweet in enumerate(tweets):
            seen: set[int] = set()
            for pos, w in enumerate(enc.word_ids(b)):
                if w is not None and w not in seen:
                    seen.add(w)
                    first[b, w] = pos
            gold = [self.index.get(tag, 0) for tag in tweet.tags]
            labels[b, : len(gold)] = torch.tensor(gold, dtype=torch.long)
        labels[first < 0] = -100
        return TaggerBatch(enc["input_ids"], enc["attention_mask"], first, labels)

    def forward(self, batch: TaggerBatch) -> Tensor:
        """Tag logits of every original token.

        Shapes:
            -> ``[B, W, 1 + 2 T]`` (tokens without a piece read the ``[CLS]`` position).
        """
        hidden = self.encoder(
            batch.input_ids, batch.attention_mask, torch.zeros_like(batch.input_ids)
        )
        idx = batch.first_piece.clamp(min=0)
        tok = hidden.gather(1, idx.unsqueeze(-1).expand(*idx.shape, hidden.size(-1)))
        logits: Tensor = self.out(tok)
        return logits

    @torch.no_grad()
    def predict(
        self,
        tokenizer: Any,
        tweets: Sequence[Any],
        batch_size: int,
        device: torch.device | str = "cpu",
    ) -> list[list[str]]:
        """BIO tags per tweet (tweets sorted by length into batches, as the model's predict)."""
        self.eval()
        order = sorted(range(len(tweets)), key=lambda i: len(tweets[i].tokens))
        out: list[list[str]] = [[] for _ in tweets]
        for k in range(0, len(order), batch_size):
            rows = order[k : k + batch_size]
            batch = self.encode(tokenizer, [tweets[i] for i in rows]).to(device)
            ids = self(batch).argmax(-1).masked_fill(batch.first_piece < 0, 0).tolist()
            for r, i in enumerate(rows):
                out[i] = [self.tags[t] for t in ids[r][: len(tweets[i].tokens)]]
        return out

    def loss(self, batch: TaggerBatch) -> Tensor:
        """Token-level cross-entropy over tokens that have a piece."""
        logits = self(batch)
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), batch.labels.reshape(-1), ignore_index=-100
        )
