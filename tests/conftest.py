"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def single_thread():
    """One torch intra-op thread for the test, restored after it.

    Tests on tiny models and arrays: a second thread only contends with whatever else runs on
    the 2 CI cores. Modules opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
