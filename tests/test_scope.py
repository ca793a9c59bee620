import pytest

from core.scope import Scope


def test_thread_question_searches_thread_then_channel() -> None:
    scope = Scope("slack", "T1", "C1", "1700.1")
    assert scope.search_keys() == ["slack:T1:C1:1700.1", "slack:T1:C1"]


def test_channel_question_searches_only_the_channel() -> None:
    assert Scope("discord", "G1", "C9").search_keys() == ["discord:G1:C9"]


def test_key_round_trips() -> None:
    scope = Scope("slack", "T1", "C1", "1700.1")
    assert Scope.parse(scope.key) == scope
    assert Scope.from_dict(scope.to_dict()) == scope


@pytest.mark.parametrize("bad", ["slack:T1", "a:b:c:d:e"])
def test_malformed_keys_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        Scope.parse(bad)


def test_separator_inside_a_part_is_rejected() -> None:
    with pytest.raises(ValueError):
        Scope("slack", "T:1", "C1")
