"""Every error type resnet_tf raises for a user mistake, and the one style of their messages.

Each user error is a ValueError whose message is one sentence naming what was received
and what was expected (`... Received: depth=19; expected one of 18, 34, ...`); the
commands print it as one line, `<prog>: error: <message>`, and exit with status 2.
What the user cannot fix from the arguments (a download that cannot reach its server)
is a RuntimeError instead.
"""

import numbers


class ConfigError(ValueError):
    """A configuration that cannot run."""


class TrainingDivergedError(ConfigError):
    """The loss stopped being finite; nothing of the diverged epoch was kept."""


class DataError(ValueError):
    """The data asked for cannot be loaded."""


class ExportError(ValueError):
    """An export cannot be written or read."""


class EvaluationError(ValueError):
    """A model or data that cannot be evaluated or predicted on."""


class ExplainError(ValueError):
    """A layer, class index or image that cannot be explained with the model given."""


class WeightsDownloadError(RuntimeError):
    """Pretrained weights are neither in the Keras cache nor downloadable.

    A `RuntimeError`, not a `ValueError`: the arguments were right, the machine
    cannot reach the file.
    """


def _shown(value):
    return repr(value) if isinstance(value, str) else str(value)


def is_same(value, allowed):
    """`value == allowed` with the same kind: 50.0, True or "50" is not the depth 50."""
    if isinstance(allowed, bool) or isinstance(value, bool):
        return value is allowed
    if isinstance(allowed, int):
        return isinstance(value, numbers.Integral) and value == allowed
    return type(value) is type(allowed) and value == allowed


def check_choice(argument, value, allowed, error=ValueError):
    """Raises `error` in the library's style when `value` is not one of `allowed`."""
    if not any(is_same(value, a) for a in allowed):
        raise error(
            f"Unknown {argument}. Received: {argument}={_shown(value)}; "
            f"expected one of {', '.join(_shown(a) for a in allowed)}."
        )
