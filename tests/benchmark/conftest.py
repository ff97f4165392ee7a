"""Fixtures of the benchmark tests."""

from __future__ import annotations

import pytest

from cbtgym.benchmark.variants import BackendPool


@pytest.fixture(scope="module")
def pool(embedded_hf):
    """The session's SmolLM2 serves every 'embedded' role: the model loads once for all runs."""
    p = BackendPool()
    p.register("embedded", embedded_hf)
    return p
