"""Demonstration selection and ordering."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from alignflow.evaluation.embeddings import make_embedder, tfidf_embed
from alignflow.evaluation.selection import cosine_similarities, select_shots
from alignflow.evaluation.spec import EvalDoc


def item(i: int, label: str = "a", group: str = "") -> EvalDoc:
    return EvalDoc(id=str(i), input=f"x{i}", target=label, label=label, group=group)


POOL = [item(i, "pos" if i % 3 else "neg", "g1" if i < 10 else "g2") for i in range(20)]
DOCS = [item(100 + i) for i in range(5)]


def test_random_reproduces_lm_evaluation_harness_default_sampler():
    rng = random.Random(1234)
    expected = [rng.sample(POOL, 3) for _ in DOCS]  # one generator per task, per document in order
    assert select_shots(POOL, DOCS, 3, method="random", seed=1234) == expected
    assert select_shots(POOL, DOCS, 3, method="random", seed=1) != expected


def test_random_excludes_the_document_itself_when_pool_and_test_overlap():
    rng = random.Random(7)
    drawn = rng.sample(POOL, 5)
    target = drawn[0]  # the document appears in its own first draw of k + 1
    shots = select_shots(POOL, [target], 4, method="random", seed=7)[0]
    assert target not in shots and shots == [d for d in drawn if d != target][:4]


def test_first_n_balanced_and_same_group():
    first = select_shots(POOL, DOCS, 4, method="first_n")
    assert all(shots == POOL[:4] for shots in first)
    for shots in select_shots(POOL, DOCS, 4, method="balanced", seed=3):
        assert Counter(s.label for s in shots) == {"pos": 2, "neg": 2}
    odd = select_shots(POOL, DOCS, 5, method="balanced", seed=3)
    assert all(sorted(Counter(s.label for s in shots).values()) == [2, 3] for shots in odd)
    grouped = select_shots(POOL, [item(200, group="g2")], 6, method="random", same_group=True)[0]
    assert {s.group for s in grouped} == {"g2"}


def test_draw_once_shares_one_draw_and_k_beyond_the_pool_fails():
    shots = select_shots(POOL, DOCS, 3, method="random", draw="once")
    assert all(s == shots[0] for s in shots)
    with pytest.raises(ValueError, match="pool"):
        select_shots(POOL, DOCS, 21)


def fake_embed(texts: list[str]) -> np.ndarray:
    """x<i> -> a point on a line, so similarity falls with |i - j| after centering."""
    return np.array([[1.0, (int(t[1:]) - 50) / 10] for t in texts])


def test_similar_picks_nearest_and_similarity_order_ends_with_the_closest():
    pool = [item(i) for i in (38, 48, 49, 60, 10)]
    query = [item(50)]
    picked = select_shots(pool, query, 3, method="similar", embed=fake_embed)[0]
    assert [s.input for s in picked] == ["x49", "x48", "x60"]
    ordered = select_shots(pool, query, 3, method="similar", ordering="similarity", embed=fake_embed)[0]
    assert [s.input for s in ordered] == ["x60", "x48", "x49"]
    shuffled = select_shots(pool, query, 5, method="first_n", ordering="random", seed=2)[0]
    assert sorted(s.input for s in shuffled) == sorted(s.input for s in pool)
    with pytest.raises(ValueError, match="embedder"):
        select_shots(pool, query, 2, method="similar")


def test_tfidf_embedder_finds_the_paraphrase():
    vectors = tfidf_embed(["the movie was wonderful", "12, 5", "这家餐厅太棒了。", "the movie was great"])
    assert int(np.argmax(cosine_similarities(vectors[3], vectors[:3]))) == 0
    pool = [EvalDoc(str(i), text, "t", "t") for i, text in enumerate(["12, 5", "这家餐厅太棒了。", "the film was fine"])]
    query = EvalDoc("q", "the film was great", "t", "t")
    assert select_shots(pool, [query], 1, method="similar", embed=tfidf_embed)[0][0].input == "the film was fine"
    assert make_embedder("tfidf")[0] == "tfidf"
    with pytest.raises(ValueError):
        make_embedder("word2vec")
