from ..errors import ConfigError

__all__ = ["ConfigError"]
