"""The daemon's TOML configuration: ``load_config``/``parse_config`` -> frozen ``Config``."""

from .load import ConfigError, load_config, parse_config
from .model import Config, ServerConfig, ServiceConfig

__all__ = ["Config", "ConfigError", "ServerConfig", "ServiceConfig", "load_config", "parse_config"]
