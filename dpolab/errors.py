"""The one error type for bad input.

Validators raise `InputError` naming the field, the value and what is allowed; the CLI prints it on
one line and exits with code 2. Any other exception is a bug and is shown as one.
"""


class InputError(ValueError):
    """A value given by the user (flag, config field, spec entry, file) is not allowed."""
