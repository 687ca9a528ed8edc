"""Near-duplicate detection: shingles, MinHash signatures, LSH banding, choosing what to drop."""

from __future__ import annotations

import numpy as np
import pytest

from alignflow.data.minhash import (
    LshParams,
    candidate_pairs,
    estimated_jaccard,
    exact_jaccard,
    first_kept_matches,
    lsh_params,
    minhash_signatures,
    near_duplicates,
    shingle_hashes,
    shingles,
    similar_pairs,
)


def test_shingle_hashes_match_exact_shingles_and_handle_short_text():
    text = "the quick brown fox jumps over the lazy dog"
    assert len(shingle_hashes(text, 5)) == len(shingles(text, 5))
    assert shingles("abc", 5) == {"abc"} and len(shingle_hashes("abc", 5)) == 1
    assert len(shingle_hashes("", 5)) == 1
    assert np.array_equal(shingle_hashes(text, 5), shingle_hashes(text, 5))
    assert not np.array_equal(shingle_hashes(text, 5), shingle_hashes(text, 4))


def test_minhash_estimate_tracks_exact_jaccard():
    base = "the quick brown fox jumps over the lazy dog near the river bank today"
    variants = [base, base.replace("lazy", "sleepy"), base.replace("river bank", "old mill"), "completely different"]
    signatures = minhash_signatures([shingle_hashes(t, 5) for t in variants], num_perm=512, seed=1)
    for j in range(1, 4):
        exact = len(shingles(base, 5) & shingles(variants[j], 5)) / len(shingles(base, 5) | shingles(variants[j], 5))
        estimate = estimated_jaccard(signatures, np.array([[0, j]]))[0]
        assert abs(estimate - exact) < 0.08, (j, exact, estimate)


def test_minhash_depends_on_seed_and_is_reproducible():
    sets = [shingle_hashes("some text here", 3)]
    assert np.array_equal(minhash_signatures(sets, 64, seed=3), minhash_signatures(sets, 64, seed=3))
    assert not np.array_equal(minhash_signatures(sets, 64, seed=3), minhash_signatures(sets, 64, seed=4))


def test_signatures_are_blocked_without_changing_results(monkeypatch):
    import alignflow.data.minhash as minhash

    sets = [shingle_hashes(f"document number {i} " * (i % 5 + 1), 4) for i in range(50)]
    whole = minhash_signatures(sets, 32)
    monkeypatch.setattr(minhash, "_BLOCK_ELEMENTS", 32 * 20)  # force many small blocks
    assert np.array_equal(minhash_signatures(sets, 32), whole)


def test_lsh_params_fit_the_signature_and_move_with_the_threshold():
    strict, loose = lsh_params(0.9, 128), lsh_params(0.5, 128)
    for params in (strict, loose):
        assert params.bands * params.rows <= 128
    assert strict.rows > loose.rows  # a higher threshold needs longer bands
    assert lsh_params(0.8, 128) == LshParams(bands=9, rows=13)


def test_candidate_pairs_come_from_shared_bands_only():
    signatures = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [7, 7, 3, 4], [5, 6, 7, 8], [1, 2, 0, 0]], dtype=np.uint32)
    pairs = candidate_pairs(signatures, LshParams(bands=2, rows=2))
    assert pairs.tolist() == [[0, 1], [0, 2], [0, 4], [1, 4]]


def test_first_kept_matches_do_not_chain_through_removed_rows():
    pairs = np.array([[0, 1], [1, 2], [0, 3], [2, 3]])
    similarity = np.array([0.9, 0.85, 0.8, 0.95])
    removed = first_kept_matches(pairs, similarity)
    # 1 goes (like 0); 2 resembles only the removed 1, so it stays; 3 resembles both kept 0 and 2: the closer wins
    assert [(d.index, d.of) for d in removed] == [(1, 0), (3, 2)]


def test_near_duplicates_finds_edited_copies_not_strangers():
    base = ("alignflow cleans instruction data before supervised fine tuning so that the model does not learn "
            "the same example twice and so that evaluation stays honest")
    texts = [base, "an unrelated sentence about cooking rice with water and salt for dinner tonight",
             base.replace("twice", "two times"), base + " indeed"]
    found = near_duplicates(texts, threshold=0.8, num_perm=128, shingle_size=5)
    assert [(d.index, d.of) for d in found] == [(2, 0), (3, 0)]
    assert all(0.8 <= d.similarity <= 1 for d in found)
    assert near_duplicates(texts[:1], 0.8) == []


def test_exact_jaccard_of_pairs():
    texts = ["abcdef", "abcdeg", "xyz"]
    values = exact_jaccard(texts, np.array([[0, 1], [0, 2], [1, 1]]), 3)
    assert values.tolist() == [pytest.approx(3 / 5), 0.0, 1.0]  # abc bcd cde shared; def vs deg differ


def test_similar_pairs_never_report_below_the_threshold_and_find_pairs_just_above():
    base = " ".join(f"word{i}" for i in range(60))
    variant = base.replace("word7 ", "").replace("word30", "w30").replace("word45", "wx45")
    exact = len(shingles(base, 5) & shingles(variant, 5)) / len(shingles(base, 5) | shingles(variant, 5))
    texts = [base, "something else entirely, nothing alike at all", variant]
    assert similar_pairs(texts, threshold=exact + 0.01)[0].tolist() == []
    pairs, similarity = similar_pairs(texts, threshold=exact - 0.01)
    assert pairs.tolist() == [[0, 2]] and similarity[0] == pytest.approx(exact)
