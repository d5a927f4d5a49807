"""Errors a user can act on. The CLI prints their message as one paragraph and exits with code 2."""


class HookformerError(Exception):
    """Base of every error caused by the user's input (config, data, plugins), not by a bug."""


class ConfigError(HookformerError):
    """The run config is invalid. The message lists every problem with its field path."""


class PluginError(HookformerError):
    """A plugin could not be loaded or registered. The message names the entry point and its distribution."""


class DataError(HookformerError):
    """The training data cannot be used (missing file, empty corpus, undecodable bytes, too short)."""


class CheckpointError(HookformerError):
    """A checkpoint is missing, incomplete or does not match the config."""
