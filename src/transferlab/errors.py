"""Every exception transferlab raises on purpose, for problems a user can fix.

The CLI turns every ``TransferlabError`` into one line on stderr and exit code 2. Each class
also subclasses the matching built-in, so ``except ValueError`` keeps working for library users.
"""


class TransferlabError(Exception):
    """Base class of every error transferlab raises on purpose."""


class DataError(TransferlabError, ValueError):
    """The data given cannot be used: missing, empty, malformed, or unreadable."""


class BackboneError(TransferlabError, LookupError):
    """A backbone name, checkpoint or cut point that cannot be resolved or loaded."""

    def __str__(self) -> str:  # LookupError would otherwise quote the message like KeyError
        return str(self.args[0]) if self.args else ""


class ConfigError(TransferlabError, ValueError):
    """A parameter outside its allowed values."""


class BundleError(TransferlabError, ValueError):
    """A saved model bundle that is missing, incomplete or inconsistent."""


def check_choice(option: str, value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise a ConfigError in the command line's
    words: "``option`` must be one of ..., got ...". ``option`` is the flag (``--engine``)."""
    if value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, got {value!r}.")
    return value


class TrainingDiverged(TransferlabError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class OutputInUse(TransferlabError, RuntimeError):
    """Another transferlab run is writing to the same output folder."""


class ExportError(TransferlabError, RuntimeError):
    """An exported model does not reproduce the PyTorch model's outputs."""
