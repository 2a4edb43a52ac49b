"""How a command fails: exit codes and the one-line error for the user."""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class CommandError(Exception):
    """A one-line failure message for the user (exit 1)."""
