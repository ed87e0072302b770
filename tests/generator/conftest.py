"""Fixtures every generator test module shares: one torch thread, and the saved tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.generator.test_train import tiny_lm_folder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: a 2-layer model is 20x faster without thread contention on a busy box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_lm_folder(tmp_path_factory)
