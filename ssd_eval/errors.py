"""The one exception type that means "the user's input is wrong", and a bounded quote for its messages."""

import reprlib
import sys


class UserError(Exception):
    """A mistake in the user's input (config, file, model, data, command line): the CLI prints its message,
    which names the file, key or image at fault, as one line and exits with status 2."""


QUOTE_LIMIT = 200


def quote(value: object) -> str:
    """``repr(value)`` cut to at most QUOTE_LIMIT characters, never building the repr of a huge value."""
    shortener = reprlib.Repr()
    shortener.maxlevel = 3
    shortener.maxdict = shortener.maxlist = shortener.maxtuple = shortener.maxset = 8
    shortener.maxstring = shortener.maxother = shortener.maxlong = QUOTE_LIMIT
    text = shortener.repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT - 3] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: what a one-line UserError
    quotes of a library's own exception."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def print_error(command: str, message: str) -> None:
    """Print one ``ssd-eval COMMAND: error: MESSAGE`` line on stderr."""
    print(f"ssd-eval {command}: error: {message}", file=sys.stderr)
