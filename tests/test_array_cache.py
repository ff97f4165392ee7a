"""The on-disk cache of arrays computed from fixed data (embeddings of example sets, fitted weights)."""

from __future__ import annotations

import numpy as np
import pytest

from cbtgym import array_cache, embeddings
from rewards.acts.softmax import fit_softmax, fit_softmax_cached

TEXTS = ["What went through your mind just then?", "Let's try a breathing exercise together."]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CBTGYM_CACHE", str(tmp_path))
    return tmp_path / array_cache.SUBDIR


def _stored(cache_dir, name):
    return sorted(cache_dir.glob(f"{name}-*.npz"))


def test_hit_gives_the_stored_vectors_without_the_model(cache_dir, monkeypatch):
    first = embeddings.encode_cached(TEXTS, name="t")
    np.testing.assert_allclose(first, embeddings.embed(TEXTS), atol=1e-5)
    assert len(_stored(cache_dir, "t")) == 1

    def no_model(texts):
        raise AssertionError("a cache hit must not embed")

    monkeypatch.setattr(embeddings, "embed", no_model)
    again = embeddings.encode_cached(TEXTS, name="t")
    assert again.dtype == np.float32 and np.array_equal(again, first)


def test_a_changed_or_reordered_text_is_a_new_key(cache_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(embeddings, "embed", lambda texts: calls.append(list(texts)) or np.ones((len(texts), 3), np.float32))
    embeddings.encode_cached(TEXTS, name="t")
    embeddings.encode_cached([TEXTS[0], TEXTS[1] + " "], name="t")
    embeddings.encode_cached(TEXTS[::-1], name="t")
    embeddings.encode_cached(TEXTS, name="t")
    assert len(calls) == 3 and len(_stored(cache_dir, "t")) == 3
    key = array_cache.content_key
    assert key("ab", "c") != key("a", "bc") and key(1) != key(1.0) != key("1")
    assert key(np.zeros(2, np.float32)) != key(np.zeros(2, np.float64)) != key(np.zeros((1, 2), np.float64))


@pytest.mark.parametrize("damage", [b"", b"not a zip file", "truncated"])
def test_a_corrupt_file_is_recomputed_and_replaced(cache_dir, monkeypatch, damage):
    monkeypatch.setattr(embeddings, "embed", lambda texts: np.full((len(texts), 3), 0.5, np.float32))
    expected = embeddings.encode_cached(TEXTS, name="t")
    (path,) = _stored(cache_dir, "t")
    path.write_bytes(path.read_bytes()[:100] if damage == "truncated" else damage)
    np.testing.assert_array_equal(embeddings.encode_cached(TEXTS, name="t"), expected)
    with np.load(path) as npz:  # rewritten whole
        np.testing.assert_array_equal(npz["vectors"], expected)


def test_a_file_without_the_expected_arrays_is_recomputed(cache_dir):
    key = array_cache.content_key("x")
    array_cache.cached_arrays("t", key, lambda: {"other": np.zeros(1)}, ("other",))
    got = array_cache.cached_arrays("t", key, lambda: {"W": np.ones(2)}, ("W",))
    np.testing.assert_array_equal(got["W"], np.ones(2))
    with pytest.raises(ValueError, match="name"):
        array_cache.cached_arrays("../escape", key, lambda: {}, ())
    with pytest.raises(TypeError, match="dict"):
        array_cache.content_key({"a": 1})


def test_an_unwritable_cache_still_computes(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("CBTGYM_CACHE", str(blocker))
    got = array_cache.cached_arrays("t", array_cache.content_key("x"), lambda: {"W": np.ones(2)}, ("W",))
    np.testing.assert_array_equal(got["W"], np.ones(2))


def test_cached_softmax_weights_equal_a_fresh_fit_and_depend_on_every_input(cache_dir):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    fresh = fit_softmax(X, y, 3, 1e-3, 50)
    for _ in range(2):  # miss, then hit
        cached = fit_softmax_cached(X, y, 3, 1e-3, 50)
        assert np.array_equal(cached.W, fresh.W) and np.array_equal(cached.b, fresh.b)
    assert len(_stored(cache_dir, "softmax")) == 1
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 3
    for args in [(X, y2, 3, 1e-3, 50), (X, y, 3, 1e-2, 50), (X, y, 3, 1e-3, 60), (X[:, ::-1], y, 3, 1e-3, 50)]:
        fit_softmax_cached(*args)
    assert len(_stored(cache_dir, "softmax")) == 5
