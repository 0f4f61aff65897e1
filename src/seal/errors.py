"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class SealError(Exception):
    """A problem the user can fix: bad input, a missing file, an unknown version, a refused update."""
