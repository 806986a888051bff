"""Configuration files (YAML) for the factory and the frontend, validated into pydantic models.

Use `load_factory_config(path)` / `load_frontend_config(path)`; a bad file raises
`ConfigFileError` (a `gwms.errors.ConfigError`) whose message names the file, line and field.
"""

from gwms.config.factory import AUTH_METHODS, Entry, FactoryConfig
from gwms.config.frontend import Credential, FrontendConfig, Group
from gwms.config.issues import ConfigFileError, ConfigIssue
from gwms.config.loader import load_config, load_factory_config, load_frontend_config

__all__ = [
    "AUTH_METHODS",
    "ConfigFileError",
    "ConfigIssue",
    "Credential",
    "Entry",
    "FactoryConfig",
    "FrontendConfig",
    "Group",
    "load_config",
    "load_factory_config",
    "load_frontend_config",
]
