"""The one exception type for mistakes a user can fix."""


class UserError(Exception):
    """A problem with the user's input, configuration or environment.

    The message says what is wrong and what to do about it. Command-line scripts catch it,
    print the message on one line and exit with `exit_code`; bugs raise anything else.
    """

    exit_code = 2
