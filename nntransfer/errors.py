"""Exceptions shared across nntransfer's layers (no imports: any module may import this one)."""


class ConfigError(ValueError):
    """A config has an unknown field, a value of the wrong type, or an unresolvable builder path."""


class TrainingInterrupted(Exception):
    """Training stopped on request after its state was checkpointed; the job should be released, not failed."""


__all__ = ["ConfigError", "TrainingInterrupted"]
