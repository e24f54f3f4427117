"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single stderr line and exit code 2; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """Bad input: the message names the file (and row) and what is wrong with it."""
