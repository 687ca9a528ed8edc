"""Near-duplicate detection: character shingles, MinHash signatures, LSH banding (numpy only).

MinHash estimates the Jaccard similarity of two shingle sets as the share of hash permutations
on which their minima agree; LSH splits each signature into bands so that only documents that
agree on a whole band are compared, which keeps the work near-linear in the number of documents.
Candidate pairs are then confirmed on their exact shingle sets.
Everything is seeded and independent of PYTHONHASHSEED, so results are reproducible (the stage
is cached on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_POLY_BASE = np.uint64(0x100000001B3)  # odd base of the rolling shingle hash
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)
_BLOCK_ELEMENTS = 1 << 18  # permutations x shingles hashed at once (2 MB of uint64: stays in cache)


def shingles(text: str, size: int) -> set[str]:
    """The character `size`-grams of `text` (the whole text when it is shorter): the exact sets."""
    if len(text) <= size:
        return {text}
    return {text[i : i + size] for i in range(len(text) - size + 1)}


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads a polynomial hash over all 64 bits."""
    values = values ^ (values >> np.uint64(30))
    values = values * _MIX_1
    values = values ^ (values >> np.uint64(27))
    values = values * _MIX_2
    return values ^ (values >> np.uint64(31))


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """32-bit hashes of the distinct character shingles of `text` (never empty), like `shingles`."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    width = min(size, len(codes))
    count = len(codes) - width + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(width):
        hashes = hashes * _POLY_BASE + codes[offset : offset + count]
    return np.unique((_mix64(hashes) >> np.uint64(32)).astype(np.uint32))


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers (odd) and offsets of the multiply-shift hashes h(x) = (a*x + b mod 2^64) >> 32."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64)
    return a, b


def minhash_signatures(hash_sets: list[np.ndarray], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """One row of `num_perm` minima per document (uint32), computed in memory-bounded blocks."""
    a, b = permutations(num_perm, seed)
    a, b = a[:, None], b[:, None]
    signatures = np.empty((len(hash_sets), num_perm), dtype=np.uint32)
    sizes = np.array([len(h) for h in hash_sets], dtype=np.int64)
    if (sizes == 0).any():
        raise ValueError("every document needs at least one shingle hash")
    ends = np.cumsum(sizes)
    start = 0
    while start < len(hash_sets):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _BLOCK_ELEMENTS // num_perm, side="right")))
        values = np.concatenate(hash_sets[start:stop]).astype(np.uint64)[None, :]
        offsets = np.concatenate(([0], np.cumsum(sizes[start : stop - 1])))
        hashed = values * a  # in place from here: this loop is the stage's hot spot
        hashed += b
        hashed >>= np.uint64(32)
        signatures[start:stop] = np.minimum.reduceat(hashed, offsets, axis=1).T
        start = stop
    return signatures


@dataclass(frozen=True)
class LshParams:
    """`bands` bands of `rows` signature positions; two documents are candidates if a band matches."""

    bands: int
    rows: int


def _band_probability(similarity: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - similarity**rows) ** bands


def lsh_params(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
               false_negative_weight: float = 0.5) -> LshParams:
    """Bands and rows minimising the weighted areas of false positives below and misses above `threshold`.

    The same criterion as datasketch's MinHashLSH (whose weights default to 0.5 and 0.5).
    """
    below = np.linspace(0.0, threshold, 201)
    above = np.linspace(threshold, 1.0, 201)
    best, best_error = LshParams(1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            false_positive = np.trapezoid(_band_probability(below, bands, rows), below)
            false_negative = np.trapezoid(1.0 - _band_probability(above, bands, rows), above)
            error = false_positive_weight * false_positive + false_negative_weight * false_negative
            if error < best_error:
                best, best_error = LshParams(bands, rows), error
    return best


def _bucket_pairs(members: np.ndarray) -> np.ndarray:
    members = np.sort(members)
    first, second = np.triu_indices(len(members), 1)
    return np.stack([members[first], members[second]], axis=1)


def candidate_pairs(signatures: np.ndarray, params: LshParams) -> np.ndarray:
    """Distinct (i, j), i < j, of documents whose signatures agree on at least one whole band."""
    n = len(signatures)
    found: list[np.ndarray] = [np.empty((0, 2), dtype=np.int64)]
    for band in range(params.bands):
        block = np.ascontiguousarray(signatures[:, band * params.rows : (band + 1) * params.rows])
        keys = block.view(np.dtype((np.void, block.shape[1] * block.itemsize))).ravel()
        _, bucket = np.unique(keys, return_inverse=True)
        order = np.argsort(bucket, kind="stable")
        grouped = bucket[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        sizes = np.diff(np.r_[starts, n])
        pairs_at = starts[sizes == 2]  # the common case, vectorised
        found.append(np.sort(np.stack([order[pairs_at], order[pairs_at + 1]], axis=1), axis=1))
        for start, size in zip(starts[sizes > 2], sizes[sizes > 2], strict=True):
            found.append(_bucket_pairs(order[start : start + size]))
    pairs = np.concatenate(found).astype(np.int64)
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1) if len(codes) else np.empty((0, 2), dtype=np.int64)


def estimated_jaccard(signatures: np.ndarray, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Share of signature positions on which each pair agrees: the MinHash estimate of Jaccard."""
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        out[start : start + chunk] = (signatures[part[:, 0]] == signatures[part[:, 1]]).mean(axis=1)
    return out


def exact_jaccard(texts: list[str], pairs: np.ndarray, size: int) -> np.ndarray:
    """Exact Jaccard similarity of each pair's shingle sets (sets built once per document)."""
    sets: dict[int, set[str]] = {}
    out = np.empty(len(pairs), dtype=np.float64)
    for k, (i, j) in enumerate(pairs.tolist()):
        a = sets[i] if i in sets else sets.setdefault(i, shingles(texts[i], size))
        b = sets[j] if j in sets else sets.setdefault(j, shingles(texts[j], size))
        out[k] = len(a & b) / len(a | b)
    return out


# LSH candidates are checked afterwards, so an extra candidate costs one comparison while a missed
# pair is a duplicate left in the data: bands are chosen weighting misses 9:1 (datasketch: 1:1).
RECALL_WEIGHTS = (0.1, 0.9)
# Candidates whose MinHash estimate is this far below the threshold skip the exact check
# (about 3 standard deviations of the estimate at 128 permutations).
ESTIMATE_MARGIN = 0.1


def similar_pairs(texts: list[str], threshold: float, num_perm: int = 128, shingle_size: int = 5,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) pairs, i < j, whose exact Jaccard similarity reaches `threshold`, and that similarity.

    LSH proposes candidates; the MinHash estimate discards clear misses cheaply; exact Jaccard
    decides, so no pair is reported below the threshold (the estimate alone errs both ways).
    """
    if len(texts) < 2:
        return np.empty((0, 2), dtype=np.int64), np.empty(0)
    signatures = minhash_signatures([shingle_hashes(t, shingle_size) for t in texts], num_perm, seed)
    pairs = candidate_pairs(signatures, lsh_params(threshold, num_perm, *RECALL_WEIGHTS))
    pairs = pairs[estimated_jaccard(signatures, pairs) >= threshold - ESTIMATE_MARGIN]
    similarity = exact_jaccard(texts, pairs, shingle_size)
    close = similarity >= threshold
    return pairs[close], similarity[close]


@dataclass(frozen=True)
class NearDuplicate:
    """Document `index` is a near-duplicate of the earlier, kept document `of`."""

    index: int
    of: int
    similarity: float  # Jaccard similarity of their shingle sets


def first_kept_matches(pairs: np.ndarray, similarity: np.ndarray) -> list[NearDuplicate]:
    """Walk documents in order; drop one when it matches a document still kept.

    Unlike taking connected components, a chain A~B~C with A and C dissimilar keeps C once B
    is gone, so nothing is removed for resembling a removed document only.
    """
    removed: dict[int, NearDuplicate] = {}
    order = np.lexsort((pairs[:, 0], -similarity, pairs[:, 1]))  # by later document, most similar first
    for k in order:
        earlier, later = int(pairs[k, 0]), int(pairs[k, 1])
        if later not in removed and earlier not in removed:
            removed[later] = NearDuplicate(later, earlier, float(similarity[k]))
    return sorted(removed.values(), key=lambda d: d.index)


def near_duplicates(texts: list[str], threshold: float, num_perm: int = 128, shingle_size: int = 5,
                    seed: int = 0) -> list[NearDuplicate]:
    """Documents whose Jaccard similarity to an earlier kept one reaches `threshold`."""
    return first_kept_matches(*similar_pairs(texts, threshold, num_perm, shingle_size, seed))
