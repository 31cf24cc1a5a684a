"""One definition per setting of a run (`Field`), from which the rest is made.

`TrainConfig` and `RunOptions` are made from a table of fields (`recipes.FIELDS`), and so
are `train.py`'s flags with their help text and stated default, `check_config`'s type,
choice and range checks, and `--print-recipe`'s lines: a new setting is one `Field` in
that table, plus the code that uses it.
"""

import dataclasses
import math
import numbers

from resnet_tf.errors import ConfigError, is_same

RECIPE = "recipe"  # `Field.default_text` of a value the recipe decides


@dataclasses.dataclass(frozen=True)
class Field:
    """One setting of a run: a `TrainConfig` (or `RunOptions`) field and its flag.

    Args:
        name: str. The dataclass field; the flag is `--name` with dashes.
        type: `int`, `float`, `str`, `bool` or `tuple` (comma-separated integers).
        help: str. The flag's help, without its default.
        group: str. The `--help` section.
        default: the dataclass default; None means "decided later", as
            `default_text` says (e.g. `RECIPE`).
        default_text: str or None. The default as `--help` states it when it is not
            `default` itself.
        choices: tuple or None. The allowed values.
        low, high: numbers or None. The allowed range (each element's, for `tuple`).
        low_open, high_open: bool. Whether `low` / `high` themselves are excluded.
        cap: bool. `high` is a practical limit (a value above it is "too large"), not
            the edge of what the value means.
        hint: str. What the value is, for range errors (e.g. "0: none").
        options: bool. A `RunOptions` field (how a run executes), not a `TrainConfig` one.
        flag: bool. Whether `train.py` has a flag for it.
        metavar: str or None. The flag's argument name in `--help`.
        no_flag: the value of an extra `--no-NAME` flag, or None for none.
    """

    name: str
    type: type
    help: str
    group: str
    default: object = None
    default_text: str | None = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    cap: bool = False
    hint: str = ""
    options: bool = False
    flag: bool = True
    metavar: str | None = None
    no_flag: object = None

    @property
    def option(self):
        """The flag, e.g. `--width-multiplier`."""
        return "--" + self.name.replace("_", "-")

    @property
    def help_text(self):
        """The help with its default, as `--help` prints it."""
        default = self.default_text
        if default is None:
            default = "none" if self.default is None else self.default
        return f"{self.help} (default: {default})"

    def annotation(self):
        """The dataclass field's type: `type`, or `type | None` when None is the default."""
        return self.type if self.default is not None else self.type | None

    def check(self, value):
        """Raises `ConfigError` unless `value` (not None) is of this field's type, one
        of its choices and within its range."""
        if self.choices is not None:
            if not any(is_same(value, c) for c in self.choices):
                raise ConfigError(
                    f"{self.option} must be one of {', '.join(map(str, self.choices))}. "
                    f"Received: {self.option} {value!r}; expected one of them.")
        elif self.type in (int, float):
            self._check_number(value)
        elif self.type is tuple:
            if not isinstance(value, (tuple, list)):
                raise ConfigError(f"{self.option} must be a list of integers. Received: "
                                  f"{self.option} {value!r}; expected e.g. (20, 30).")
            for item in value:
                self._check_number(item)

    def _check_number(self, value):
        integer = self.type in (int, tuple)
        kind = numbers.Integral if integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{self.option} must be {'an integer' if integer else 'a number'}. "
                              f"Received: {self.option} {value!r}; expected {self._expected()}.")
        if not integer and not math.isfinite(value):
            raise ConfigError(f"{self.option} must be a finite number. Received: {self.option} "
                              f"{value}; expected {self._expected()}.")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open
                                           else value > self.high)
        if below or above:
            what = "is too large" if above and self.cap else "is out of range"
            raise ConfigError(f"{self.option} {what}. Received: {self.option} {value}; "
                              f"expected {self._expected()}.")

    def _expected(self):
        if self.type in (int, tuple) and self.low is not None and self.high is not None:
            text = f"an integer from {self.low} to {self.high}"
        else:
            text = "an integer" if self.type in (int, tuple) else "a number"
            bounds = [f"{'>' if self.low_open else '>='} {self.low:g}" if self.low is not None
                      else None,
                      f"{'<' if self.high_open else '<='} {self.high:g}" if self.high is not None
                      else None]
            text = " ".join([text, " and ".join(b for b in bounds if b)]).strip()
        return f"{text} ({self.hint})" if self.hint else text


def dataclass_of(name, fields, doc, module):
    """A mutable dataclass `name` with one attribute per field, its defaults and types."""
    cls = dataclasses.make_dataclass(
        name, [(f.name, f.annotation(), dataclasses.field(default=f.default)) for f in fields])
    cls.__module__, cls.__doc__ = module, doc  # for pickling and help()
    return cls
