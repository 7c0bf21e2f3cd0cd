"""Split a store's articles and products into retrieval chunks with stable keys.

An article becomes one or more chunks of roughly 80-200 words, cut at headings and
paragraph breaks (a long paragraph is cut again at sentence ends). A product becomes
exactly one chunk that reads like a catalogue card: title, type, description, option
values, price range, availability and SKUs, so a question about any of those finds it.

Every chunk carries the title of its source in front of the text that is embedded,
because a paragraph such as "You have 30 days." means nothing without "Returns policy".

A chunk's key ``(kind, source_id, chunk_no)`` is stable as long as the source keeps its
id, and its ``content_hash`` changes exactly when the text that is embedded changes:
the index re-embeds a chunk only when its hash moves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from knowledge_base.models import Article, Product

MIN_WORDS = 80
MAX_WORDS = 200

ChunkKey = tuple[str, str, int]

_HEADING_RE = re.compile(r"^\s{0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


@dataclass(frozen=True)
class Chunk:
    """One piece of a store's knowledge that is embedded and searched on its own."""

    kind: str  # "faq" | "policy" | "product"
    source_id: str
    chunk_no: int
    title: str
    # The chunk's own text: what a hit shows as its snippet.
    text: str
    url: str = ""
    # Section heading the text sits under, if the article has headings.
    heading: str = ""

    @property
    def key(self) -> ChunkKey:
        return (self.kind, self.source_id, self.chunk_no)

    @property
    def embed_text(self) -> str:
        """The text that is embedded and indexed: the title (and heading) give context."""
        head = f"{self.title} - {self.heading}" if self.heading else self.title
        return f"{head}\n{self.text}"

    @property
    def content_hash(self) -> str:
        # The URL is part of what a hit returns, so a changed URL refreshes the row too.
        digest = hashlib.sha256()
        for part in (self.kind, self.embed_text, self.url):
            digest.update(part.encode("utf-8"))
            digest.update(b"\x00")
        return digest.hexdigest()[:32]


def word_count(text: str) -> int:
    return len(text.split())


def _sections(body: str) -> list[tuple[str, list[str]]]:
    """Split a body into (heading, paragraphs) sections; text before any heading has ""."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            sections[-1][1].append("\n".join(paragraph).strip())
            paragraph.clear()

    for line in body.replace("\r\n", "\n").split("\n"):
        heading = _HEADING_RE.match(line)
        if heading:
            flush()
            sections.append((heading.group(2).strip(), []))
        elif line.strip():
            paragraph.append(line.rstrip())
        else:
            flush()
    flush()
    return [(h, [p for p in ps if p]) for h, ps in sections if any(ps)]


def _split_long(paragraph: str, max_words: int) -> list[str]:
    """Cut a paragraph longer than ``max_words`` at sentence ends (or lines, or words)."""
    if word_count(paragraph) <= max_words:
        return [paragraph]
    units = _SENTENCE_END_RE.split(paragraph) if "\n" not in paragraph else paragraph.split("\n")
    pieces: list[str] = []
    current: list[str] = []
    for unit in units:
        words = unit.split()
        if len(words) > max_words:
            # A single sentence longer than a chunk: cut it by words, it is rare.
            if current:
                pieces.append(" ".join(current))
                current = []
            for start in range(0, len(words), max_words):
                pieces.append(" ".join(words[start : start + max_words]))
            continue
        if current and word_count(" ".join(current)) + len(words) > max_words:
            pieces.append(" ".join(current))
            current = []
        current.append(unit.strip())
    if current:
        pieces.append(" ".join(current) if "\n" not in paragraph else "\n".join(current))
    return pieces


def _pack(paragraphs: Sequence[str], min_words: int, max_words: int) -> list[str]:
    """Greedily join paragraphs into pieces of ``min_words``..``max_words`` words."""
    units = [piece for p in paragraphs for piece in _split_long(p, max_words)]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for unit in units:
        n = word_count(unit)
        if current and size >= min_words and size + n > max_words:
            pieces.append("\n\n".join(current))
            current, size = [], 0
        current.append(unit)
        size += n
    if current:
        # A short tail reads better glued to the previous piece when it still fits.
        if pieces and size < min_words and word_count(pieces[-1]) + size <= max_words:
            pieces[-1] = pieces[-1] + "\n\n" + "\n\n".join(current)
        else:
            pieces.append("\n\n".join(current))
    return pieces


def chunk_text(
    kind: str,
    source_id: str,
    title: str,
    body: str,
    *,
    url: str = "",
    min_words: int = MIN_WORDS,
    max_words: int = MAX_WORDS,
) -> list[Chunk]:
    """Chunks of one article body, cut at headings and paragraphs."""
    chunks: list[Chunk] = []
    for heading, paragraphs in _sections(body):
        for piece in _pack(paragraphs, min_words, max_words):
            chunks.append(
                Chunk(kind, source_id, len(chunks), title.strip(), piece, url=url, heading=heading)
            )
    if not chunks:
        # An article with a title and no body still answers "do you have X?" questions.
        chunks.append(Chunk(kind, source_id, 0, title.strip(), title.strip(), url=url))
    return chunks


def chunk_article(article: Article) -> list[Chunk]:
    """Chunks of one FAQ or policy article."""
    return chunk_text(
        article.kind or "faq", article.source_id, article.title, article.body or "", url=article.url
    )


def _money(value: Decimal | float | int) -> str:
    return f"${Decimal(value).quantize(Decimal('0.01'))}"


def product_text(product: Product) -> str:
    """The catalogue card of a product: every fact a shopper may ask about, on one page."""
    variants = list(product.variants)
    lines: list[str] = []
    facts = []
    if product.product_type:
        facts.append(f"Type: {product.product_type}")
    if product.vendor:
        facts.append(f"Brand: {product.vendor}")
    if facts:
        lines.append(". ".join(facts) + ".")
    description = " ".join((product.description or "").split())
    if description:
        lines.append(description)
    options: dict[str, list[str]] = {}
    for name in product.option_names or []:
        options.setdefault(name, [])
    for variant in variants:
        for name, value in (variant.options or {}).items():
            values = options.setdefault(name, [])
            if value and value not in values:
                values.append(str(value))
    for name, values in options.items():
        if values:
            lines.append(f"{name.capitalize()} options: {', '.join(values)}.")
    if variants:
        prices = [Decimal(v.price) for v in variants if v.price is not None]
        if prices:
            low, high = min(prices), max(prices)
            price = _money(low) if low == high else f"{_money(low)} to {_money(high)}"
            lines.append(f"Price: {price}.")
        in_stock = sum(1 for v in variants if v.available)
        if in_stock == len(variants):
            lines.append("Availability: in stock.")
        elif in_stock == 0:
            lines.append("Availability: out of stock.")
        else:
            sold_out = [v.title or _variant_label(v.options) for v in variants if not v.available]
            lines.append(
                f"Availability: {in_stock} of {len(variants)} variants in stock; "
                f"sold out: {', '.join(s for s in sold_out if s)}."
            )
        skus = [v.sku for v in variants if v.sku]
        if skus:
            lines.append(f"SKUs: {', '.join(skus)}.")
    if product.tags:
        lines.append(f"Tags: {', '.join(str(t) for t in product.tags)}.")
    return "\n".join(lines) if lines else product.title


def _variant_label(options: dict[str, str] | None) -> str:
    return " / ".join(str(v) for v in (options or {}).values())


def chunk_product(product: Product) -> Chunk:
    """The single chunk of a product (its variants included)."""
    return Chunk("product", product.source_id, 0, product.title.strip(), product_text(product),
                 url=product.url or "")


def chunk_store(articles: Iterable[Article], products: Iterable[Product]) -> list[Chunk]:
    """Every chunk of a store, in a deterministic order. Orders are never chunked."""
    chunks: list[Chunk] = []
    for article in sorted(articles, key=lambda a: a.source_id):
        chunks.extend(chunk_article(article))
    for product in sorted(products, key=lambda p: p.source_id):
        chunks.append(chunk_product(product))
    return chunks
