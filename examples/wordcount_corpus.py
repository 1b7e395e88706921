"""A deterministic synthetic corpus for the word-count example (examples/wordcount.py).

Word frequencies follow Zipf's law over a fixed vocabulary: a hundred common
English words head the ranking, made-up words from syllables fill the long
tail. Documents are drawn from a pool of such sentences (capitalised,
punctuated), which makes generating a word about ten times cheaper than
counting it, so the example's timings measure the counting. The same seed
always writes the same files, whatever the machine.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

# The hundred most frequent English words, in order: the head of the ranking.
_COMMON_WORDS = """
the of and to a in is you that it he was for on are as with his they i at be this have from
or one had by word but not what all were we when your can said there use an each which she do
how their if will up other about out many then them these so some her would make like him into
time has look two more write go see number no way could people my than first water been call
who oil its now find long down day did get come made may part don't it's
"""
COMMON = tuple(_COMMON_WORDS.split())
SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou")

VOCABULARY_SIZE = 10_000
ZIPF_EXPONENT = 1.07
SENTENCES = 20_000  # the pool that documents are drawn from
SENTENCES_PER_DOCUMENT = (200, 800)  # about 10 words each: 5,000 words per document on average


def vocabulary(seed: int, size: int = VOCABULARY_SIZE) -> list[str]:
    """``size`` distinct lowercase words, most frequent first: COMMON, then made-up ones."""
    rng = random.Random(seed)
    words = list(COMMON)
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def sentence_pool(seed: int, count: int = SENTENCES) -> list[str]:
    """``count`` sentences whose words are drawn with Zipf weights (rank ** -ZIPF_EXPONENT)."""
    rng = random.Random(seed)
    words = vocabulary(seed)
    weights = list(itertools.accumulate(rank**-ZIPF_EXPONENT for rank in range(1, len(words) + 1)))
    pool = []
    for _ in range(count):
        picked = rng.choices(words, cum_weights=weights, k=rng.randint(4, 16))
        picked[0] = picked[0].capitalize()
        if len(picked) > 8 and rng.random() < 0.5:
            picked[len(picked) // 2] += ","
        pool.append(" ".join(picked) + rng.choice(".....?!"))
    return pool


def write_corpus(directory: Path, documents: int, seed: int) -> list[Path]:
    """Write ``documents`` text files (paragraphs of 8 sentences) into ``directory``.

    Document ``i`` depends only on ``seed`` and ``i``. Returns the paths in order.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pool = sentence_pool(seed)
    paths = []
    for i in range(documents):
        rng = random.Random(seed * 1_000_003 + i)
        sentences = rng.choices(pool, k=rng.randint(*SENTENCES_PER_DOCUMENT))
        paragraphs = (" ".join(sentences[j : j + 8]) for j in range(0, len(sentences), 8))
        path = directory / f"doc-{i:05d}.txt"
        path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
