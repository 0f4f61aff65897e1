"""The error types: the CLI turns any `SealError` into a one-line message and a non-zero exit; the server tells the
kinds apart by type to answer with the right status."""


class SealError(Exception):
    """A problem the user can fix: bad input, a missing file, an unknown version, a refused update."""


class Busy(SealError):
    """Another writer (a `seal learn`, the server's adaptation worker) holds the store: try again later."""


class NotFound(SealError):
    """No such version."""


class NotText(SealError):
    """A document that is not UTF-8 text (binary, or another encoding)."""


class NotCommitted(SealError):
    """A version its checks rolled back: it has no weights to serve."""
