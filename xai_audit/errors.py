"""One family of errors. The CLI turns each into one clear line and exit status 2."""

from __future__ import annotations


class XaiAuditError(Exception):
    """Base of every error the tool raises on purpose (bad input, bad plan, bad plugin)."""


class PlanError(XaiAuditError):
    """The plan is invalid. ``problems`` holds one located message per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PluginLoadError(XaiAuditError):
    """A plugin could not be imported or registered."""


class PluginNameClash(XaiAuditError):
    """Two plugins registered the same name for the same kind."""


class DataError(XaiAuditError):
    """A data set, sample or file could not be read or does not fit the model."""


class ModelError(XaiAuditError):
    """A model could not be loaded or returned something unusable."""
