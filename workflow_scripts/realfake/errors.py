"""Ground floor: the error type every stage raises for a bad input (imports nothing of ours)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input problem, with the dotted key or file it concerns in the message."""


class DeviceError(RuntimeError):
    """The node cannot give a job what it was granted (GPUs torch cannot see): one clear line."""
