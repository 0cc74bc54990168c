"""Typed errors. Library code raises these; only the CLI turns them into a red line and exit code 2."""


class AdapruneError(Exception):
    """Base class of every error the tool reports to a user as one line."""


class ProfileError(AdapruneError):
    """A device profile is unknown, malformed, or fails validation."""


class ModelError(AdapruneError):
    """A model spec cannot be resolved or loaded, or its architecture is unsupported."""


class DataError(AdapruneError):
    """Calibration or evaluation data is missing, empty, or in the wrong format."""


class ConfigError(AdapruneError):
    """An option value is out of range or names something unknown."""


class ExportError(AdapruneError):
    """A GGUF or HF export cannot be written or read."""


class LatencyError(AdapruneError):
    """A latency measurement failed or a budget cannot be met."""


class OutputExistsError(AdapruneError):
    """An output exists and --force was not given."""


class OutputWriteError(AdapruneError):
    """An output could not be written (disk full, read-only, no permission); nothing partial is left."""
