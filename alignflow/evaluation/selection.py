"""Which demonstrations each document gets, and in what order.

Methods (`select_shots`):

- `random`: lm-evaluation-harness's default sampler: one `random.Random(seed)` per task and k,
  `rng.sample(pool, k)` for each document in order (k + 1 and the document itself removed when
  the pool and the test set are the same items).
- `first_n`: the first k items of the pool (the same demonstrations for every document).
- `balanced`: as equal a number of demonstrations per label as k allows, labels in a seeded
  order, items drawn at random within each label.
- `similar`: the k pool items whose inputs are nearest the document's input (cosine
  similarity of sentence embeddings).

`draw="once"` makes one draw per task and k (the first document's) and gives it to every
document, so that all documents share one prefix. Orderings: `as_selected`, `random` (seeded
shuffle) and `similarity` (least similar first, so the most similar demonstration sits next to
the query).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from alignflow.evaluation.spec import EvalDoc

Selection = Literal["random", "first_n", "balanced", "similar"]
Ordering = Literal["as_selected", "random", "similarity"]
Embed = Callable[[list[str]], np.ndarray]


def _same(a: EvalDoc, b: EvalDoc) -> bool:
    return a.input == b.input and a.target == b.target


def sample_random(pool: Sequence[EvalDoc], doc: EvalDoc, k: int, rng: random.Random) -> list[EvalDoc]:
    """lm-evaluation-harness's `ContextSampler.sample`, with `doc` excluded if it is in the pool."""
    if k == 0:
        return []
    if any(_same(item, doc) for item in pool):
        drawn = [item for item in rng.sample(list(pool), min(k + 1, len(pool))) if not _same(item, doc)][:k]
        if len(drawn) < k:
            drawn = rng.sample([item for item in pool if not _same(item, doc)], k)
        return drawn
    return rng.sample(list(pool), k)


def first_n(pool: Sequence[EvalDoc], doc: EvalDoc, k: int) -> list[EvalDoc]:
    return [item for item in pool if not _same(item, doc)][:k]


def balanced(pool: Sequence[EvalDoc], doc: EvalDoc, k: int, rng: random.Random) -> list[EvalDoc]:
    """Round-robin over labels (seeded order), a seeded random item of each label per turn."""
    by_label: dict[str, list[EvalDoc]] = defaultdict(list)
    for item in pool:
        if not _same(item, doc):
            by_label[item.label].append(item)
    labels = sorted(by_label)
    rng.shuffle(labels)
    queues = {label: rng.sample(by_label[label], len(by_label[label])) for label in labels}
    chosen: list[EvalDoc] = []
    while len(chosen) < k and any(queues.values()):
        for label in labels:
            if queues[label] and len(chosen) < k:
                chosen.append(queues[label].pop())
    return chosen


def cosine_similarities(query: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine similarity of one vector with every row of `matrix` (zero rows score 0)."""
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(query) or 1.0)
    return (matrix @ query) / np.where(norms == 0, 1.0, norms)


def nearest(pool: Sequence[EvalDoc], pool_vectors: np.ndarray, doc: EvalDoc, doc_vector: np.ndarray,
            k: int) -> list[tuple[EvalDoc, float]]:
    """The k most similar pool items (most similar first; ties keep pool order), `doc` itself excluded."""
    scores = cosine_similarities(doc_vector, pool_vectors)
    order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
    picked = [(pool[i], float(scores[i])) for i in order if not _same(pool[i], doc)]
    return picked[:k]


def order_shots(shots: list[EvalDoc], ordering: Ordering, rng: random.Random,
                similarity: dict[int, float] | None = None) -> list[EvalDoc]:
    """Reorder selected demonstrations; `similarity` maps id(shot) -> similarity to the query."""
    if ordering == "as_selected":
        return list(shots)
    if ordering == "random":
        return rng.sample(shots, len(shots))
    if similarity is None:
        raise ValueError("ordering 'similarity' needs similarities (selection 'similar' or an embedder)")
    return sorted(shots, key=lambda s: similarity[id(s)])  # least similar first, most similar last


def select_shots(pool: Sequence[EvalDoc], docs: Sequence[EvalDoc], k: int, *, method: Selection = "random",
                 ordering: Ordering = "as_selected", seed: int = 1234, draw: Literal["per_document", "once"] =
                 "per_document", same_group: bool = False, embed: Embed | None = None) -> list[list[EvalDoc]]:
    """Demonstrations for every document, in document order (reproducible from `seed`)."""
    rng = random.Random(seed)
    order_rng = random.Random(f"{seed}:order")
    needs_vectors = method == "similar" or ordering == "similarity"
    if needs_vectors and embed is None:
        raise ValueError(f"selection {method!r} / ordering {ordering!r} needs an embedder")
    pool_vectors = doc_vectors = None
    if needs_vectors and pool and docs:  # one call: pool and documents share one vector space
        vectors = embed([item.input for item in pool] + [doc.input for doc in docs])
        pool_vectors, doc_vectors = vectors[: len(pool)], vectors[len(pool):]
    shots_per_doc: list[list[EvalDoc]] = []
    for index, doc in enumerate(docs):
        if draw == "once" and shots_per_doc:
            shots_per_doc.append(shots_per_doc[0])
            continue
        indices = [i for i, item in enumerate(pool) if not same_group or item.group == doc.group]
        candidates = [pool[i] for i in indices]
        if k > len([c for c in candidates if not _same(c, doc)]):
            raise ValueError(f"k={k} demonstrations requested but the pool for document {doc.id} has "
                             f"{len(candidates)} items")
        similarity: dict[int, float] | None = None
        if method == "similar":
            picked = nearest(candidates, pool_vectors[indices], doc, doc_vectors[index], k)
            shots = [item for item, _ in picked]
            similarity = {id(item): score for item, score in picked}
        elif method == "first_n":
            shots = first_n(candidates, doc, k)
        elif method == "balanced":
            shots = balanced(candidates, doc, k, rng)
        else:
            shots = sample_random(candidates, doc, k, rng)
        if ordering == "similarity" and similarity is None:
            by_id = {id(item): i for i, item in enumerate(pool)}
            scores = cosine_similarities(doc_vectors[index], pool_vectors[[by_id[id(s)] for s in shots]]) \
                if shots else []
            similarity = {id(s): float(v) for s, v in zip(shots, scores, strict=True)}
        shots_per_doc.append(order_shots(shots, ordering, order_rng, similarity))
    return shots_per_doc
