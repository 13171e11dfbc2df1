import pytest
from ai_edge_litert import interpreter as litert

from tests.export.helpers import CountingInterpreter


@pytest.fixture
def counting(monkeypatch):
    """Every LiteRT interpreter the package creates is a
    `CountingInterpreter`; yields the class, reset."""
    CountingInterpreter.reset()
    monkeypatch.setattr(litert, "Interpreter", CountingInterpreter)
    yield CountingInterpreter
    CountingInterpreter.reset()
