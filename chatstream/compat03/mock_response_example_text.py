"""ChatStream 0.3's mock answers, now today's (chatstream.engine.mock_generator): ``sample_text_array`` the
answers of mock type ``"round"`` (one per turn, in turn), ``sample_text_long`` the answer of type ``"long"``."""

from ..engine.mock_generator import LONG_TEXT as sample_text_long
from ..engine.mock_generator import ROUND_TEXTS

sample_text_array = list(ROUND_TEXTS)

__all__ = ["sample_text_array", "sample_text_long"]
