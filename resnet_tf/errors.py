"""The error types resnet_tf raises for user mistakes.

Each is a ValueError whose message is one sentence naming what was received and what
was expected; the commands print it as one line and exit with status 2.
"""


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one sentence for the user."""


class DataError(ValueError):
    """The data asked for cannot be loaded; the message says what was received and expected."""
