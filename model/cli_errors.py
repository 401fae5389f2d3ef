"""How every command of the console script reports a failure: `error: <message>` on stderr, then an exit status.

    with exits_on(OmniRetrieverError, ValueError):   # a bad input or option: exit 2
        result = do_the_work()
    fail("no such thing", code=1)                     # an outcome the command itself refuses

Exit statuses: 0 success, 1 the work ran and failed (or its verdict is no), 2 a bad input or option.
`index build` adds 3: the index was written, but some records were left out (its rejects file lists them).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

BAD_INPUT = 2  # the exit status of a bad input or option
FAILED = 1  # the exit status of work that ran and failed


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    """Print `error: message` in red on stderr and exit with `code`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def exits_on(*errors: type[BaseException], code: int = BAD_INPUT, suffix: str = "") -> Iterator[None]:
    """Turn any of `errors` raised inside into fail(str(error) + suffix, code); anything else propagates."""
    try:
        yield
    except errors as exc:
        fail(f"{exc}{suffix}", code)
