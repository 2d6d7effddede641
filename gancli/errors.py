"""The one exception type that means "the user asked for something that cannot be done"."""


class GancliError(Exception):
    """A user error: the CLI prints its message as one line and exits with `exit_code`."""

    exit_code = 2
    label = "error"     # how the CLI prefixes the line ("" for a stop the user asked for)
