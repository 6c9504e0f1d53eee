"""The root of the errors a user can act on: the command line reports them in one line."""


class BuildError(Exception):
    """Bad input or an unfit artifact; the message says what was wrong and what to do."""
