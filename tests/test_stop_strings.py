"""The stop-string filter that cuts streamed answers."""

from __future__ import annotations

import pytest

from core.stop_strings import StopStringFilter


def run(stop: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    f = StopStringFilter(stop)
    shown = "".join(f.feed(p) for p in pieces) + f.flush()
    return shown, f.stopped


@pytest.mark.parametrize(
    "pieces",
    [
        ["The answer.", "\n###", " Human: next"],  # stop string inside one piece
        ["The answer.\n", "#", "##", " Human"],  # split over three pieces
        ["The answer.\n###", " Human: x"],
    ],
)
def test_cuts_at_the_stop_string_however_it_is_split(pieces: list[str]) -> None:
    assert run(("\n###",), pieces) == ("The answer.", True)


def test_held_prefix_is_released_when_it_turns_out_not_to_stop() -> None:
    f = StopStringFilter(("\nUser:",))
    assert f.feed("line one\nUs") == "line one"  # "\nUs" could begin "\nUser:"
    assert f.feed("ually fine") == "\nUsually fine"
    assert f.flush() == ""
    assert not f.stopped


def test_flush_releases_a_held_prefix_at_the_end() -> None:
    assert run(("\nUser:",), ["done\nUse"]) == ("done\nUse", False)


def test_earliest_of_several_stop_strings_wins() -> None:
    assert run(("STOP", "END"), ["a END b STOP c"]) == ("a ", True)


def test_nothing_after_a_stop_is_shown() -> None:
    f = StopStringFilter(("|",))
    assert f.feed("a|b") == "a"
    assert f.feed("more") == ""
    assert f.flush() == ""


def test_no_stop_strings_passes_everything_through() -> None:
    assert run((), ["a", "b"]) == ("ab", False)
