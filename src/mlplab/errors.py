"""The one exception type users see.

Anything that is the user's fault (a corrupt data file, an unknown layer name, an impossible size,
a diverging run) raises :class:`MlplabError` with a one-line message that names the thing and the
fix. The CLI prints that line and exits non-zero without a traceback; bugs in mlplab itself stay
ordinary exceptions so that they do show a traceback.
"""


class MlplabError(Exception):
    """A user-facing error whose message is one line naming the problem and its fix."""

    exit_code = 2


class DataError(MlplabError):
    """A data file is missing, corrupt, truncated or of the wrong format."""


class ConfigError(MlplabError):
    """An architecture string, config file or option is invalid."""


class DivergenceError(MlplabError):
    """Training produced NaN or Inf in the loss or the weights."""

    exit_code = 3
