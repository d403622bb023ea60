"""Errors a user can fix.

Every subclass of :class:`HydraoptError` is a user mistake (bad input, a missing plugin, a
broken file): the CLI prints its message and exits with status 2, without a traceback.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class HydraoptError(Exception):
    """A problem with the user's input, reported without a traceback."""


class ConfigError(HydraoptError):
    """pipeline.toml is malformed or names things that do not exist.

    ``problems`` holds one line per problem, each naming ``file:line``, the key path and
    what was expected, so that all of them are reported at once.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DataError(HydraoptError):
    """A data file (cohort CSV, polymer library) has a bad row or column."""


class PluginError(HydraoptError):
    """A plugin is unknown, registered twice, or could not be loaded."""


class StoreError(HydraoptError):
    """The run directory or one of its artifacts is unreadable or inconsistent."""
