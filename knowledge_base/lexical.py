"""Lexical side of hybrid search: a tokenizer that keeps identifiers whole, and BM25.

Dense vectors are good at "my parcel never came" ~ "lost package", and bad at
``NW-KPR-YEL-S``: a SKU, an order number or a product name must match as an exact
word. The tokenizer therefore keeps compound identifiers (letters and digits joined by
``-``, ``_``, ``.`` or ``/``) as one token and also emits their parts, lower-cases
everything and strips a few English suffixes so "returns" finds "return".

:class:`BM25` is an Okapi BM25 over compressed postings (one numpy array per term):
scoring one query over 100k chunks touches only the postings of its few terms.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-_./][a-z0-9]+)*")
_SPLIT_RE = re.compile(r"[-_./]")

_STOPWORDS_TEXT = """
    a about above after again all am an and any are as at be been before being below
    between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me
    more most my myself no nor not now of off on once only or other our ours out over own
    same she should so some such than that the their theirs them then there these they this
    those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself hi hello hey please pls thanks thank
    u ur im ive id dont cant wont want wanna need get got know tell let us
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def _stem(token: str) -> str:
    """A light English stemmer: plural and a few verb endings. Identifiers stay as they are."""
    if any(ch.isdigit() for ch in token) or len(token) <= 3:
        return token
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith(("sses", "shes", "ches", "xes")):
        return token[:-2]
    if token.endswith("s") and not token.endswith(("ss", "us", "is")):
        token = token[:-1]
    if token.endswith("ing") and len(token) > 5:
        return token[:-3]
    if token.endswith("ed") and len(token) > 4:
        return token[:-2]
    return token


def _mixed(part: str) -> bool:
    return any(ch.isdigit() for ch in part) and any(ch.isalpha() for ch in part)


def is_identifier(token: str) -> bool:
    """True for SKU-, order-number- or model-like tokens.

    ``nw10482``, ``nw-tnt-2p-grn``, ``sku-12345`` and ``ab-12-cd`` are identifiers;
    ``2-person``, ``30-day`` and ``5.95`` are ordinary words a shopper types.
    """
    parts = [p for p in _SPLIT_RE.split(token) if p]
    if len(parts) == 1:
        return _mixed(token) and len(token) >= 4
    if not any(ch.isdigit() for ch in token):
        return False
    if any(_mixed(p) for p in parts) or len(parts) >= 3:
        return not all(p.isdigit() for p in parts)
    return any(p.isdigit() and len(p) >= 3 for p in parts) and any(
        p.isalpha() and len(p) >= 2 for p in parts
    )


def tokenize(text: str, *, keep_stopwords: bool = False) -> list[str]:
    """Index terms of ``text``: lower-cased, stemmed, compounds kept whole plus their parts."""
    tokens: list[str] = []
    for match in _TOKEN_RE.finditer(text.lower()):
        word = match.group(0)
        if _SPLIT_RE.search(word):
            tokens.append(word)
            parts = [p for p in _SPLIT_RE.split(word) if p]
            # Decimal numbers ("5.95") are one fact; their halves are noise.
            if not all(p.isdigit() for p in parts):
                tokens.extend(_stem(p) for p in parts if keep_stopwords or p not in STOPWORDS)
        elif keep_stopwords or (word not in STOPWORDS and (len(word) > 1 or word.isdigit())):
            tokens.append(_stem(word))
    return tokens


def identifiers(text: str) -> list[str]:
    """The identifier-like tokens of ``text`` (what must match exactly)."""
    return [t for t in dict.fromkeys(tokenize(text)) if is_identifier(t)]


class BM25:
    """Okapi BM25 over a fixed set of documents, keyed by caller-chosen integer ids."""

    def __init__(self, docs: Iterable[tuple[int, Sequence[str]]], *, k1: float = 1.2,
                 b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        ids: list[int] = []
        lengths: list[int] = []
        vocab: dict[str, int] = {}
        rows: list[np.ndarray] = []
        terms: list[np.ndarray] = []
        tfs: list[np.ndarray] = []
        for doc_index, (doc_id, tokens) in enumerate(docs):
            ids.append(doc_id)
            lengths.append(len(tokens))
            counts = Counter(tokens)
            if not counts:
                continue
            term_ids = np.fromiter(
                (vocab.setdefault(t, len(vocab)) for t in counts), dtype=np.int64,
                count=len(counts),
            )
            terms.append(term_ids)
            tfs.append(np.fromiter(counts.values(), dtype=np.float32, count=len(counts)))
            rows.append(np.full(len(counts), doc_index, dtype=np.int32))
        self.ids = np.asarray(ids, dtype=np.int64)
        self.vocab = vocab
        self.n_docs = len(ids)
        lengths_arr = np.asarray(lengths, dtype=np.float32)
        self.avg_len = float(lengths_arr.mean()) if self.n_docs else 0.0
        # Per-document length normalisation of BM25, computed once.
        self._norm = (
            k1 * (1 - b + b * lengths_arr / self.avg_len) if self.avg_len else lengths_arr
        )
        if terms:
            all_terms = np.concatenate(terms)
            order = np.argsort(all_terms, kind="stable")
            self._docs = np.concatenate(rows)[order]
            self._tfs = np.concatenate(tfs)[order]
            self._offsets = np.searchsorted(all_terms[order], np.arange(len(vocab) + 1))
        else:
            self._docs = np.zeros(0, dtype=np.int32)
            self._tfs = np.zeros(0, dtype=np.float32)
            self._offsets = np.zeros(1, dtype=np.int64)
        self._max_idf = math.log(1 + (self.n_docs + 0.5) / 0.5) if self.n_docs else 0.0

    def idf(self, term: str) -> float:
        """Inverse document frequency; a term that occurs nowhere gets the largest value."""
        index = self.vocab.get(term)
        if index is None:
            return self._max_idf
        df = int(self._offsets[index + 1] - self._offsets[index])
        return math.log(1 + (self.n_docs - df + 0.5) / (df + 0.5))

    def postings(self, term: str) -> np.ndarray:
        """Document ids (the caller's ids) that contain ``term``."""
        index = self.vocab.get(term)
        if index is None:
            return np.zeros(0, dtype=np.int64)
        start, end = self._offsets[index], self._offsets[index + 1]
        return self.ids[self._docs[start:end]]

    def scores(self, query_tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(doc ids, BM25 scores) of every document sharing a term with the query."""
        if not self.n_docs:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        acc = np.zeros(self.n_docs, dtype=np.float32)
        touched = False
        for term in dict.fromkeys(query_tokens):
            index = self.vocab.get(term)
            if index is None:
                continue
            start, end = self._offsets[index], self._offsets[index + 1]
            docs = self._docs[start:end]
            tf = self._tfs[start:end]
            # docs are unique within one term's postings, so fancy-index += is exact.
            acc[docs] += self.idf(term) * tf * (self.k1 + 1) / (tf + self._norm[docs])
            touched = True
        if not touched:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        hit = np.flatnonzero(acc)
        return self.ids[hit], acc[hit]

    def top(self, query_tokens: Sequence[str], n: int) -> list[tuple[int, float]]:
        """The ``n`` best (doc id, score) pairs, best first."""
        ids, scores = self.scores(query_tokens)
        if not len(ids):
            return []
        if len(ids) > n:
            best = np.argpartition(-scores, n - 1)[:n]
            ids, scores = ids[best], scores[best]
        order = np.argsort(-scores, kind="stable")
        return [(int(ids[i]), float(scores[i])) for i in order]

    def query_weight(self, query_tokens: Sequence[str]) -> float:
        """The sum of the query's term idfs: a document scoring this matched every term once.

        Dividing a BM25 score by it gives a 0..~1 "how much of the query matched" figure
        that is comparable across queries, unlike the raw score.
        """
        return sum(self.idf(t) for t in dict.fromkeys(query_tokens))
