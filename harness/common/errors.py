"""Errors caused by the user's input or environment: reported in one line, without a traceback."""


class HarnessError(Exception):
    """Base of every error the entry points print as `error: <message>` and exit 2."""


def harness_cause(e: BaseException) -> HarnessError | None:
    """The HarnessError behind `e`, if any: Hydra's instantiate wraps what a target raises in an
    InstantiationException of several lines; the user only needs the inner one-line message."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, HarnessError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
