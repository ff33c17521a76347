"""The error of an invalid configuration, shared by config validation and the method families."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key."""
