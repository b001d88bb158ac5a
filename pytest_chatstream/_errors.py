"""chatstream's exceptions, imported when one is raised.

Importing ``chatstream`` imports torch (seconds), and the plugin is loaded by every pytest run of a
project that has chatstream installed, whether or not a test uses a cassette.
"""

from __future__ import annotations


def configuration_error(message: str) -> Exception:
    from chatstream.exceptions import ConfigurationError

    return ConfigurationError(message)


def cassette_not_found(message: str) -> Exception:
    from chatstream.exceptions import CassetteNotFound

    return CassetteNotFound(message)


def is_configuration_error(error: BaseException) -> bool:
    from chatstream.exceptions import ConfigurationError

    return isinstance(error, ConfigurationError)
