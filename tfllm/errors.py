"""The one exception type for mistakes a user can fix.

The command line turns a `UserError` into a single line on stderr and exit code 2;
every other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: the message names the file/key/value and says what to do."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGTERM/SIGINT after saving a checkpoint; the message says how to resume.

    The command line prints it as one line and exits with 130, as after Ctrl-C.
    """
