"""`Closing`: the `with` form of everything that owns a connection, a channel or an engine and has `close()`."""

from __future__ import annotations

from typing import Self


class Closing:
    """`with thing:` returns `thing` and calls `thing.close()` on the way out, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
