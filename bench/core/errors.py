"""One exception type for bad input: the CLI turns it into a one-line message and exit code 2."""


class BenchError(Exception):
    """A user-facing error: the message names the bad file or value and what was expected."""


class DataError(BenchError):
    """A data set, file or image that cannot be used as given."""


class ConfigError(BenchError):
    """A study, preset, method name or `--set` override that is not valid."""


class DivergenceError(BenchError):
    """Training produced a non-finite or exploding loss; the row fails, the others go on."""
