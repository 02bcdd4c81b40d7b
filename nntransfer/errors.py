"""Exceptions shared across nntransfer (no imports: any module may import this one)."""


class ConfigError(ValueError):
    """A config has an unknown field, a value of the wrong type, or an unresolvable builder path."""
