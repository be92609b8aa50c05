"""Ground floor: the error type every stage raises for a bad input (imports nothing of ours)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration or input problem, with the dotted key or file it concerns in the message."""


class DeviceError(RuntimeError):
    """The node cannot give a job what it was granted (GPUs torch cannot see): one clear line."""


class SegmentDone(Exception):
    """A training job finished its segment and saved its checkpoint; the next job continues.
    Stages exit with ``SEGMENT_EXIT`` so Snakemake reruns the job (the rule's ``retries``)."""


SEGMENT_EXIT = 75  # EX_TEMPFAIL


def segment_stop(done: int, total: int, segments: int) -> int:
    """Where the segment that starts at ``done`` of ``total`` units (steps, epochs) ends: the
    next of the evenly spaced boundaries ceil(total * k / segments)."""
    for k in range(1, segments + 1):
        stop = -(-total * k // segments)
        if stop > done:
            return stop
    return total
