"""PrefixCache and the sampler of kv_decoding: logic on small tensors (the real model is in test_hf.py)."""

from __future__ import annotations

import pytest
import torch

from cbtgym.backends.kv_decoding import NUCLEUS_TOP_K, sample
from cbtgym.backends.prefix_cache import PrefixCache, common_prefix_length


def kv(n: int, layers: int = 2) -> list:
    """States of ``n`` tokens: 1 head, dim 2, float32 (8 bytes a token per tensor)."""
    return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2)) for _ in range(layers)]


def t(*ids: int) -> torch.Tensor:
    return torch.tensor(ids)


def test_common_prefix_length():
    assert common_prefix_length(t(1, 2, 3), t(1, 2, 4, 5)) == 2
    assert common_prefix_length(t(1, 2), t(1, 2, 3)) == 2
    assert common_prefix_length(t(9), t(1, 2)) == 0
    assert common_prefix_length(t(), t(1)) == 0


def test_lookup_finds_the_longest_shared_prefix_and_counts_reuse():
    cache = PrefixCache(10_000)
    cache.add(t(1, 2, 3), kv(3))
    cache.add(t(1, 2, 7, 8, 9), kv(5))
    entry, n = cache.lookup(t(1, 2, 7, 8, 0))
    assert n == 4 and entry.tokens.tolist() == [1, 2, 7, 8, 9]
    entry, n = cache.lookup(t(1, 2, 3, 4))
    assert n == 3 and entry.tokens.tolist() == [1, 2, 3]
    assert cache.lookup(t(5, 6)) == (None, 0)
    cache.count(read=4, reused=3)
    assert (cache.read_tokens, cache.reused_tokens) == (4, 3)


def test_a_sequence_replaces_the_ones_it_extends_and_is_skipped_when_covered():
    cache = PrefixCache(10_000)
    cache.add(t(1, 2), kv(2))
    cache.add(t(1, 2, 3, 4), kv(4))  # the next turn of the same session
    assert len(cache) == 1 and cache.nbytes == 4 * 2 * 2 * 2 * 4
    cache.add(t(1, 2, 3), kv(3))  # already inside (1, 2, 3, 4)
    assert len(cache) == 1


def test_budget_evicts_least_recently_used():
    per_token = 2 * 2 * 2 * 4  # layers x (k, v) x dim x float32
    cache = PrefixCache(10 * per_token)
    cache.add(t(1, 1, 1, 1), kv(4))
    cache.add(t(2, 2, 2, 2), kv(4))
    cache.lookup(t(1, 1, 1, 1))  # (1, ...) used last: (2, ...) goes first
    cache.add(t(3, 3, 3, 3), kv(4))
    assert cache.lookup(t(2, 2, 2, 2)) == (None, 0)
    assert cache.lookup(t(1, 1, 1, 1))[1] == 4 and cache.lookup(t(3, 3, 3, 3))[1] == 4
    assert cache.nbytes <= cache.max_bytes
    cache.add(t(*range(11)), kv(11))  # larger than the whole budget: not stored, nothing evicted for it
    assert len(cache) == 2
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixCache(0)


def test_greedy_is_argmax():
    logits = torch.tensor([[0.1, 3.0, 0.2], [5.0, 1.0, 0.0]])
    assert sample(logits, 0.0, 1.0).tolist() == [1, 0]


def _nucleus_reference(probs: torch.Tensor, top_p: float) -> set[int]:
    order = probs.argsort(descending=True).tolist()
    out, mass = set(), 0.0
    for i in order:
        if mass >= top_p:
            break
        out.add(i)
        mass += float(probs[i])
    return out


@pytest.mark.parametrize("vocab", [50, 4 * NUCLEUS_TOP_K])  # nucleus inside the top-k, and one that needs the full sort
def test_nucleus_draws_only_the_smallest_set_reaching_top_p(vocab):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(vocab, generator=gen) * (3.0 if vocab == 50 else 0.01)  # flat: top-k holds < top_p
    probs = torch.softmax(logits, -1)
    allowed = _nucleus_reference(probs, 0.9)
    if vocab > NUCLEUS_TOP_K:
        assert len(allowed) > NUCLEUS_TOP_K
    torch.manual_seed(1)
    drawn = set(sample(logits.repeat(4000, 1), 1.0, 0.9).tolist())
    assert drawn <= allowed
    assert len(drawn) > 0.8 * len(allowed)


def test_draws_follow_the_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1, 1e-9]))
    drawn = sample(logits.repeat(20_000, 1), 1.0, 1.0)
    freq = torch.bincount(drawn, minlength=4).float() / len(drawn)
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1, 0.0]), atol=0.015)
    # temperature sharpens: at 0.5 the odds of token 0 over 1 go from 3.5 to 12.25
    drawn = sample(logits.repeat(20_000, 1), 0.5, 1.0)
    freq = torch.bincount(drawn, minlength=4).float()
    assert 10.5 < float(freq[0] / freq[1]) < 14.5
