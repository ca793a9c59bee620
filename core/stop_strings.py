"""Cut a streamed answer at the first stop string, even when the stop string arrives split across pieces."""

from __future__ import annotations


class StopStringFilter:
    """Feed streamed pieces in; get back the text that is safe to show.

    Text that could be the beginning of a stop string is held back until the next piece decides it.
    Once a stop string appears, everything from it on is dropped and ``stopped`` becomes true.
    """

    def __init__(self, stop: tuple[str, ...] | list[str]):
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The part of everything fed so far that can be shown now and was not returned before."""
        if self.stopped:
            return ""
        text = self._held + piece
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._longest_stop_prefix_at_end(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        """The end of the stream: held text was not a stop string after all."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_stop_prefix_at_end(self, text: str) -> int:
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best
