"""Errors caused by the user's input or environment: reported in one line, without a traceback."""


class HarnessError(Exception):
    """Base of every error the entry points print as `error: <message>` and exit 2."""
