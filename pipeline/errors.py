"""Expected mistakes in what the user gave: a config value, a path, a dataset, a checkpoint.

`launch/imagenet.py` prints a `UserError` as one line (`error: <message>`) and exits with status 2;
every other exception is a bug or an outage and keeps its traceback. Raise these where the mistake is
detected, with a message that names the key or file and says what to do.
"""


class UserError(Exception):
    pass


class MissingInputError(UserError, FileNotFoundError):
    """A file or folder the config names is missing or empty."""


class BadInputError(UserError, ValueError):
    """A value, file list, dataset or checkpoint that exists but cannot be used as given."""
