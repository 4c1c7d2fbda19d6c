"""`Problem`: a condition the person can fix, raised by the app's code and shown by `ui.errors`.
A leaf of `ui/` (it imports nothing), so that `ui.public` can raise it and `ui.errors` can import
`ui.public`."""

from __future__ import annotations


class Problem(Exception):
    """A condition the person can fix: a message and, optionally, the page where to fix it and a
    hint; `public_hint` replaces the hint in public mode where it proposes what is turned off."""

    def __init__(self, message: str, page: str | None = None, hint: str = "", public_hint: str | None = None):
        super().__init__(message)
        self.message, self.page, self.hint, self.public_hint = message, page, hint, public_hint
