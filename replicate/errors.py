"""The one exception a user's mistake raises: `ConfigError`, whose message is one line (what is wrong,
what is allowed, what to do); the entry points print it without a traceback and exit non-zero.

    raise ConfigError("unknown dataset 'mnsit'; allowed: mnist1d, sklearn_digits, ...")
"""


class ConfigError(ValueError):
    """A user-facing configuration mistake; the message is one line: what is wrong, what is allowed."""
