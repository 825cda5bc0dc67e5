"""auxcord's shared core: settings, the event model, names, errors, clients, Spark, stores."""

from auxcord.errors import AuxcordError, ConfigError, InvalidEvent, StackError

__all__ = ["AuxcordError", "ConfigError", "InvalidEvent", "StackError", "__version__"]

__version__ = "0.1.0"
