"""Pytest plugin with the `fake_openai` fixture; load it with `pytest_plugins`.

Kept apart from tests/fake_openai.py so that module stays importable (and runnable as a
process) without pytest, and so test modules can import its helpers without pytest warning
that an already-imported plugin can't be assertion-rewritten.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fake_openai import TEST_API_KEY, FakeOpenAI


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    """A running fake; OPENAI_API_KEY and OPENAI_BASE_URL point the SDK at it."""
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server
