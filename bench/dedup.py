"""Near-dedup: alignflow's MinHash-LSH against datasketch's, on synthetic documents with planted near-duplicates.

All runs get the same documents, character shingles, threshold and number of permutations.
  alignflow (datasketch's method): LSH bands chosen as datasketch does, pairs kept when their
      MinHash estimate reaches the threshold: like for like with datasketch.
  alignflow (clean stage): what the clean stage runs (minhash.similar_pairs): bands weighted
      towards recall, then the exact Jaccard of each surviving candidate decides.
  datasketch: MinHashLSH insert + query, pairs kept when MinHash.jaccard reaches the threshold.
Truth is exact Jaccard on the shingle sets: a true pair is a planted pair, or any pair some run
reported, whose exact Jaccard reaches the threshold (all 5e9 pairs cannot be checked).
Precision = reported pairs that are true / reported; recall = true pairs reported / true pairs.

datasketch is NOT an alignflow dependency; install it for this comparison only:
    .venv/bin/pip install datasketch
Without it the script measures alignflow alone and says so.

Usage: python bench/dedup.py [--docs 100000] [--threshold 0.8] [--num-perm 128] [--shingle-size 5]
                             [--planted 0.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from alignflow.data.minhash import (
    RECALL_WEIGHTS,
    candidate_pairs,
    estimated_jaccard,
    lsh_params,
    minhash_signatures,
    shingle_hashes,
    shingles,
    similar_pairs,
)

LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
CJK_CHARS = np.array([chr(c) for c in range(0x4E00, 0x4E00 + 3000)])


# --- synthetic documents --------------------------------------------------------------------------

def vocabulary(rng: np.random.Generator, size: int = 20000) -> np.ndarray:
    lengths = rng.integers(2, 10, size=size)
    return np.array(["".join(rng.choice(LETTERS, n)) for n in lengths])


def zipf_cdf(size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return np.cumsum(weights / weights.sum())


WORD_CDF = zipf_cdf(20000, 1.1)
CJK_CDF = zipf_cdf(len(CJK_CHARS), 0.9)


def draw(rng: np.random.Generator, items: np.ndarray, cdf: np.ndarray, n: int) -> list[str]:
    """`n` Zipf-distributed items (rng.choice with p= recomputes the distribution on every call)."""
    return list(items[np.minimum(np.searchsorted(cdf, rng.random(n)), len(items) - 1)])


def base_document(rng: np.random.Generator, words: np.ndarray) -> list[str]:
    """Tokens of a fresh document: 80% English-like word streams, 20% Chinese-like character streams."""
    if rng.random() < 0.8:
        return draw(rng, words, WORD_CDF, int(rng.integers(30, 70)))
    chars = draw(rng, CJK_CHARS, CJK_CDF, int(rng.integers(60, 150)))
    for position in sorted(rng.choice(len(chars), size=len(chars) // 15, replace=False), reverse=True):
        chars.insert(int(position), "，" if rng.random() < 0.7 else "。")
    return chars


def join(tokens: list[str]) -> str:
    """Characters run together (Chinese-like), words with spaces (English-like: words have 2+ letters)."""
    return "".join(tokens) if all(len(t) == 1 for t in tokens) else " ".join(tokens)


def edited(rng: np.random.Generator, tokens: list[str], rate: float) -> list[str]:
    """A near-copy: each token replaced, dropped or followed by another with probability `rate`."""
    out: list[str] = []
    for token in tokens:
        draw = rng.random()
        if draw < rate / 3:
            out.append(str(rng.choice(tokens)))
        elif draw < 2 * rate / 3:
            continue
        elif draw < rate:
            out += [token, str(rng.choice(tokens))]
        else:
            out.append(token)
    return out or tokens


def make_corpus(n_docs: int, planted_share: float, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Documents and the planted (original, copy) pairs; copies have 0-25% of their tokens edited."""
    rng = np.random.default_rng(seed)
    words = vocabulary(rng, len(WORD_CDF))
    n_copies = int(n_docs * planted_share)
    token_lists = [base_document(rng, words) for _ in range(n_docs - n_copies)]
    planted = []
    for _ in range(n_copies):
        original = int(rng.integers(0, len(token_lists)))
        planted.append((original, len(token_lists)))
        token_lists.append(edited(rng, token_lists[original], float(rng.uniform(0.0, 0.25))))
    order = rng.permutation(len(token_lists))  # copies spread through the corpus, not at its end
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    docs = [join(token_lists[k]) for k in order]
    pairs = [tuple(sorted((int(position[a]), int(position[b])))) for a, b in planted]
    return docs, pairs


# --- the two implementations ----------------------------------------------------------------------

def alignflow_like_datasketch(docs: list[str], threshold: float, num_perm: int, size: int) -> tuple[set, int]:
    signatures = minhash_signatures([shingle_hashes(d, size) for d in docs], num_perm, seed=0)
    candidates = candidate_pairs(signatures, lsh_params(threshold, num_perm))
    close = estimated_jaccard(signatures, candidates) >= threshold
    return {(int(i), int(j)) for i, j in candidates[close]}, len(candidates)


def alignflow_clean_stage(docs: list[str], threshold: float, num_perm: int, size: int) -> tuple[set, int | None]:
    pairs, _ = similar_pairs(docs, threshold, num_perm, size, seed=0)
    return {(int(i), int(j)) for i, j in pairs}, None


def datasketch_pairs(docs: list[str], threshold: float, num_perm: int, size: int) -> tuple[set, int]:
    from datasketch import MinHash, MinHashLSH

    sketches = MinHash.bulk(([s.encode("utf-8") for s in shingles(d, size)] for d in docs), num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for key, sketch in enumerate(sketches):
            session.insert(key, sketch)
    candidates = {(min(i, j), max(i, j)) for i, sketch in enumerate(sketches) for j in lsh.query(sketch) if j != i}
    reported = {(i, j) for i, j in candidates if sketches[i].jaccard(sketches[j]) >= threshold}
    return reported, len(candidates)


# --- scoring --------------------------------------------------------------------------------------

class ExactJaccard:
    """Exact Jaccard of document pairs on their shingle sets, memoised per document."""

    def __init__(self, docs: list[str], size: int):
        self.docs, self.size, self.sets = docs, size, {}

    def __call__(self, pair: tuple[int, int]) -> float:
        a, b = (self.sets.setdefault(k, shingles(self.docs[k], self.size)) for k in pair)
        return len(a & b) / len(a | b)


def score(reported: set, truth: set) -> tuple[float, float]:
    precision = len(reported & truth) / len(reported) if reported else 1.0
    return precision, recall(reported, truth)


def recall(reported: set, truth: set) -> float:
    return len(reported & truth) / len(truth) if truth else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--shingle-size", type=int, default=5)
    parser.add_argument("--planted", type=float, default=0.1, help="share of documents that are edited copies")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    started = time.perf_counter()
    docs, planted = make_corpus(args.docs, args.planted, args.seed)
    print(f"generated {len(docs)} documents ({np.mean([len(d) for d in docs]):.0f} characters on average), "
          f"{len(planted)} planted pairs, in {time.perf_counter() - started:.1f}s", flush=True)

    runs = {"alignflow (datasketch's method)": alignflow_like_datasketch,
            "alignflow (clean stage)": alignflow_clean_stage}
    try:
        import datasketch  # noqa: F401

        runs["datasketch"] = datasketch_pairs
    except ImportError:
        print("datasketch is not installed: measuring alignflow alone (pip install datasketch to compare)")
    results = {}
    for name, run in runs.items():
        started, cpu_started = time.perf_counter(), time.process_time()
        reported, n_candidates = run(docs, args.threshold, args.num_perm, args.shingle_size)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        results[name] = (reported, n_candidates, seconds, cpu)
        print(f"{name}: {seconds:.1f}s wall, {cpu:.1f}s CPU, {len(reported)} pairs reported", flush=True)

    jaccard = ExactJaccard(docs, args.shingle_size)
    checked = set(planted).union(*(reported for reported, *_ in results.values()))
    exact = {pair: jaccard(pair) for pair in checked}
    truth = {pair for pair, value in exact.items() if value >= args.threshold}
    clear = {pair for pair, value in exact.items() if value >= args.threshold + 0.05}  # away from the noise
    planted_true = sum(pair in truth for pair in planted)
    params = lsh_params(args.threshold, args.num_perm)
    recall_params = lsh_params(args.threshold, args.num_perm, *RECALL_WEIGHTS)
    print(f"\n{len(docs)} documents, threshold {args.threshold}, {args.num_perm} permutations "
          f"({params.bands} bands x {params.rows} rows; clean stage {recall_params.bands} x {recall_params.rows}), "
          f"{args.shingle_size}-character shingles; "
          f"{len(planted)} planted pairs, {planted_true} of them at or above the threshold; "
          f"{len(truth)} true pairs in all. {platform.processor() or platform.machine()}, "
          f"numpy {np.__version__}.\n")
    print("| implementation | CPU s | documents/s (CPU) | wall s | LSH candidates | reported pairs | precision "
          f"| recall | recall at J >= {args.threshold + 0.05:.2f} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (reported, n_candidates, seconds, cpu) in results.items():
        precision, overall = score(reported, truth)
        candidates = "-" if n_candidates is None else f"{n_candidates:,}"
        print(f"| {name} | {cpu:.1f} | {len(docs) / cpu:,.0f} | {seconds:.1f} | {candidates} | {len(reported):,} | "
              f"{precision:.3f} | {overall:.3f} | {recall(reported, clear):.3f} |")


if __name__ == "__main__":
    main()
