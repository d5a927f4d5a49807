"""Cleaning step ``minhash_dedup``: removes near-duplicates (the same page with another date, header or a few edited
words), keeping the first of each group, with MinHash and locality-sensitive hashing (Broder 1997; Leskovec,
Rajaraman and Ullman, "Mining of Massive Datasets", ch. 3).

- A document is the set of its word ``shingle_size``-grams (lowercased; whitespace-separated words); one with fewer
  words is one shingle of all of them. The Jaccard similarity of two documents is |A & B| / |A | B| of their sets.
- Each word is hashed to 64 bits from its bytes (:func:`word_hashes`), a shingle to a seeded combination of its
  words' hashes folded to 32 bits, and ``num_perm`` seeded hash functions h(x) = (a x + b mod 2^64) >> 32 (a odd,
  multiply-add-shift) stand in for random permutations: the signature of a document is the minimum of each function
  over its shingles. Two signatures agree on a function with probability equal to the documents' Jaccard
  similarity, so the share of agreeing positions estimates it (standard error sqrt(J (1 - J) / num_perm)).
- LSH: the signature is cut into ``bands`` bands of ``rows`` values, chosen for ``threshold`` as the split that
  minimizes the sum of false positive and false negative probability mass (the pair of documents with similarity s
  shares a band with probability 1 - (1 - s^rows)^bands). A document that shares a band with an earlier kept one is
  a candidate; it is removed when its estimated similarity with that one reaches ``threshold``.

The step is stateful: it keeps, for every kept document, its signature (4 bytes x num_perm) and one entry per band
(about 100 bytes each in a Python dict), so memory grows by about 2 KB per kept document at the defaults. Signatures
are computed for a whole batch at once with numpy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from hookformer.core.parts import PartOptions
from hookformer.plugins.cleaners.step import CleaningStep

#: Shingles per chunk of the signature computation: its buffer is num_perm x this x 8 bytes (8 MB at the default).
_CHUNK = 1 << 13
_LOW32 = np.uint64(0xFFFFFFFF)
#: Base of the word hash polynomial: the FNV 64-bit prime (odd, so invertible mod 2^64).
_BASE = 0x100000001B3
_BASE_INVERSE = pow(_BASE, -1, 1 << 64)


def word_hashes(words: pa.Array) -> np.ndarray:
    """A 64-bit hash of each string of ``words`` that depends only on its bytes (so it is the same in every batch and
    process, unlike ``hash()``): the polynomial sum b_i x B^(n-1-i) over its UTF-8 bytes mod 2^64, all strings at
    once from running sums over the concatenated bytes, then murmur3's finalizer so similar words differ widely."""
    words = words.cast(pa.large_string())
    if len(words) == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(words.buffers()[1], dtype=np.int64)[words.offset: words.offset + len(words) + 1]
    data = words.buffers()[2]
    data = np.frombuffer(data, dtype=np.uint8)[offsets[0]: offsets[-1]] if data is not None else np.zeros(0, np.uint8)
    offsets = offsets - offsets[0]
    one = np.ones(1, dtype=np.uint64)
    powers = np.concatenate([one, np.cumprod(np.full(len(data), _BASE, dtype=np.uint64))])  # B^k mod 2^64
    inverse = np.concatenate([one, np.cumprod(np.full(len(data), _BASE_INVERSE, dtype=np.uint64))])  # B^-k
    # running[j] = sum over i < j of (b_i + 1) B^-i; a string's hash is B^(end - 1) (running[end] - running[start]).
    terms = (data.astype(np.uint64) + np.uint64(1)) * inverse[:-1]
    running = np.concatenate([np.zeros(1, dtype=np.uint64), np.cumsum(terms, dtype=np.uint64)])
    h = (running[offsets[1:]] - running[offsets[:-1]]) * powers[np.maximum(offsets[1:] - 1, 0)]
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, None):
        h ^= h >> np.uint64(33)
        if multiplier is not None:
            h *= np.uint64(multiplier)
    return h


class MinHashDedupOptions(PartOptions):
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of word shingles from which a "
                             "document is a near-duplicate of an earlier one")
    num_perm: int = Field(128, ge=8, le=1024, description="hash functions per signature: more estimate the "
                          "similarity better (error ~ 1/sqrt(num_perm)) and cost proportionally more")
    shingle_size: int = Field(5, ge=1, description="words per shingle: smaller finds more (also unrelated) "
                              "overlaps, larger only long shared passages")
    seed: int = Field(1, description="seed of the hash functions")


@lru_cache(maxsize=64)
def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows), bands x rows <= num_perm, minimizing the false positive probability mass below ``threshold``
    plus the false negative mass above it."""
    s = np.linspace(0.0, 1.0, 1001)
    below, above, ds = s <= threshold, s >= threshold, s[1]
    best, best_error = (1, 1), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            candidate = 1.0 - (1.0 - s**rows) ** bands
            error = (candidate[below].sum() + (1.0 - candidate[above]).sum()) * ds
            if error < best_error:
                best, best_error = (bands, rows), error
    return best


class MinHashDedup(CleaningStep):
    name = "minhash_dedup"
    stateful = True

    def __init__(self, options: MinHashDedupOptions):
        super().__init__(options)
        rng = np.random.default_rng(options.seed)
        high = np.iinfo(np.uint64).max
        self._a = (rng.integers(0, high, options.num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1))[:, None]
        self._b = rng.integers(0, high, options.num_perm, dtype=np.uint64, endpoint=True)[:, None]
        self._roll = rng.integers(0, high, options.shingle_size, dtype=np.uint64, endpoint=True) | np.uint64(1)
        self._band_mix = rng.integers(0, high, options.num_perm, dtype=np.uint64, endpoint=True)
        self.bands, self.rows = lsh_bands(options.threshold, options.num_perm)
        self._tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self._kept = np.zeros((0, options.num_perm), dtype=np.uint32)
        self._n_kept = 0

    def __call__(self, texts: list[str]) -> list[str | None]:
        signatures = self.signatures(texts)
        keys = self._band_keys(signatures)
        return [text if self._keep(signature, doc_keys) else None
                for text, signature, doc_keys in zip(texts, signatures, keys.tolist())]

    def signatures(self, texts: list[str]) -> np.ndarray:
        """The MinHash signatures of ``texts``: (len(texts), num_perm) uint32."""
        shingles, owner = self._shingles(texts)
        signatures = np.full((len(texts), self.options.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        buffer = np.empty((self.options.num_perm, min(_CHUNK, len(shingles))), dtype=np.uint64)
        for lo in range(0, len(shingles), _CHUNK):
            chunk, docs = shingles[lo:lo + _CHUNK], owner[lo:lo + _CHUNK]
            values = buffer[:, : len(chunk)]
            np.multiply(self._a, chunk, out=values)  # in place, mod 2^64: no temporaries
            np.add(values, self._b, out=values)
            starts = np.flatnonzero(np.diff(docs, prepend=-1))
            # The high 32 bits of the minimum are the minimum of the high 32 bits: shift once, after reducing.
            minima = (np.minimum.reduceat(values, starts, axis=1) >> np.uint64(32)).T.astype(np.uint32)
            rows = docs[starts]
            signatures[rows] = np.minimum(signatures[rows], minima)
        return signatures

    def _shingles(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The 32-bit hashes of every document's shingles, and the document each belongs to (ascending)."""
        words = pc.utf8_split_whitespace(pc.utf8_lower(pa.array(texts, pa.large_string())))
        doc = pc.list_parent_indices(words).to_numpy(zero_copy_only=False).astype(np.int64)
        encoded = pc.dictionary_encode(pc.list_flatten(words))
        hashes = word_hashes(encoded.dictionary)[encoded.indices.to_numpy(zero_copy_only=False)]
        n = self.options.shingle_size
        counts = np.bincount(doc, minlength=len(texts))
        ends = np.cumsum(counts)
        # Shingles start wherever n words of the same document follow; a shorter document is one shingle.
        valid = np.flatnonzero(doc[: max(0, len(doc) - n + 1)] == doc[n - 1:]) if len(doc) >= n else np.zeros(0, int)
        combined = np.zeros(len(valid), dtype=np.uint64)
        for j in range(n):
            combined += hashes[valid + j] * self._roll[j]
        short = np.flatnonzero(counts < n)
        short_hashes = np.array([(hashes[ends[d] - counts[d]: ends[d]] * self._roll[: counts[d]]).sum(dtype=np.uint64)
                                 for d in short], dtype=np.uint64)
        all_hashes = np.concatenate([combined, short_hashes])
        owner = np.concatenate([doc[valid], short])
        order = np.argsort(owner, kind="stable")
        all_hashes, owner = all_hashes[order], owner[order]
        return (all_hashes >> np.uint64(32)) ^ (all_hashes & _LOW32), owner

    def _band_keys(self, signatures: np.ndarray) -> np.ndarray:
        """(documents, bands) 64-bit keys: each band's rows mixed into one number."""
        used = self.bands * self.rows
        mixed = signatures[:, :used].astype(np.uint64) * self._band_mix[:used]
        return mixed.reshape(len(signatures), self.bands, self.rows).sum(axis=2, dtype=np.uint64)

    def _keep(self, signature: np.ndarray, keys: list[int]) -> bool:
        """Whether the document is new; if so it is remembered."""
        checked: set[int] = set()
        for table, key in zip(self._tables, keys):
            for candidate in table.get(key, ()):
                if candidate not in checked:
                    checked.add(candidate)
                    if np.count_nonzero(self._kept[candidate] == signature) >= self.options.threshold * len(signature):
                        return False
        index = self._remember(signature)
        for table, key in zip(self._tables, keys):
            table.setdefault(key, []).append(index)
        return True

    def _remember(self, signature: np.ndarray) -> int:
        if self._n_kept == len(self._kept):  # grow by doubling
            self._kept = np.concatenate([self._kept, np.zeros_like(self._kept, shape=(max(1024, self._n_kept),
                                                                                       self._kept.shape[1]))])
        self._kept[self._n_kept] = signature
        self._n_kept += 1
        return self._n_kept - 1

    def state_dict(self) -> dict:
        """The signatures of the documents kept so far, for a streamed run's checkpoint (the LSH tables follow
        from them)."""
        # Bytes, not an array: checkpoints are read with torch.load(weights_only=True).
        return {"signatures": self._kept[: self._n_kept].tobytes()}

    def load_state_dict(self, state: dict) -> None:
        signatures = np.frombuffer(state["signatures"], dtype=np.uint32).reshape(-1, self.options.num_perm)
        self._kept, self._n_kept = signatures.copy(), len(signatures)
        self._tables = [{} for _ in range(self.bands)]
        for index, keys in enumerate(self._band_keys(signatures).tolist()):
            for table, key in zip(self._tables, keys):
                table.setdefault(key, []).append(index)


def build(options: MinHashDedupOptions, ctx) -> MinHashDedup:
    return MinHashDedup(options)
