"""The one exception family a user can meet: one sentence saying what, where, what to do."""


class GwmsError(Exception):
    """An error the operator can act on; the CLI prints it without a traceback and exits 2."""


class ConfigError(GwmsError):
    """A configuration file is missing, unreadable or invalid."""


class CredentialError(GwmsError):
    """A certificate, proxy, key or sealed payload is unusable."""
