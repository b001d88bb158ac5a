"""Chat history and the prompt built from it.

``AbstractChatPrompt`` keeps the system message and the requester (user) / responder (AI) turns and
turns them into the text the model continues. Subclasses decide the format: ``ChatPromptFromTemplate``
uses the tokenizer's own ``chat_template``; hand-written presets live in ``chat_prompt_presets``.
Prompts serialise to plain JSON-able dicts (``to_dict`` / ``from_dict``) so a session store can keep them.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

from .exceptions import ConfigurationError

PROMPT_FORMAT_VERSION = 1


class ChatContent:
    """One message: who said it (a role name) and what was said (None while not generated yet)."""

    def __init__(self, role: str, msg: str | None = "") -> None:
        self.role = role
        self.message = msg

    def get_role(self) -> str:
        return self.role

    def get_message(self) -> str | None:
        return self.message

    def set_message(self, msg: str | None) -> None:
        self.message = msg

    def to_dict(self) -> dict:
        return {"role": self.role, "message": self.message}

    @classmethod
    def from_dict(cls, data: dict) -> ChatContent:
        return cls(data["role"], data["message"])

    def __repr__(self) -> str:
        return f"ChatContent(role={self.role!r}, message={self.message!r})"


class AbstractChatPrompt(ABC):
    """A builder of chat prompts in the format a model was trained on."""

    def __init__(self) -> None:
        self.system = ""
        self.chat_contents: list[ChatContent] = []
        self.requester = "user"
        self.responder = "assistant"
        self.chat_mode = True
        self.build_initial_prompt(self)

    # -- setup -------------------------------------------------------------------------------------

    def build_initial_prompt(self, chat_prompt: AbstractChatPrompt | None = None) -> None:
        """Set the system message and role names; presets override this. ``chat_prompt`` is self (0.3)."""
        return None  # the defaults set in __init__ stand

    def set_system(self, system: str) -> None:
        self.system = system

    def set_requester(self, requester: str) -> None:
        self.requester = requester

    def set_responder(self, responder: str) -> None:
        self.responder = responder

    def set_chat_mode_enabled(self, enabled: bool) -> None:
        self.chat_mode = enabled

    def is_chat_mode_enabled(self) -> bool:
        return self.chat_mode

    # -- turns -------------------------------------------------------------------------------------

    @property
    def requester_messages(self) -> list[ChatContent]:
        return [c for c in self.chat_contents if c.role == self.requester]

    @property
    def responder_messages(self) -> list[ChatContent]:
        return [c for c in self.chat_contents if c.role == self.responder]

    def get_turn(self) -> int:
        return len(self.requester_messages)

    def is_empty(self) -> bool:
        return not self.chat_contents

    def add_requester_msg(self, message: str) -> None:
        replacements = self.get_replacement_when_input()
        if replacements and message is not None:
            message = self.replace_string(message, replacements)
        self.chat_contents.append(ChatContent(self.requester, message))

    def add_responder_msg(self, message: str | None) -> None:
        self.chat_contents.append(ChatContent(self.responder, message))

    def get_requester_last_msg(self) -> str | None:
        messages = self.requester_messages
        return messages[-1].message if messages else None

    def get_responder_last_msg(self) -> str | None:
        messages = self.responder_messages
        return messages[-1].message if messages else None

    def set_responder_last_msg(self, message: str | None) -> None:
        if not self.chat_contents or self.chat_contents[-1].role != self.responder:
            raise ValueError("the last message is not the responder's; call add_responder_msg first")
        self.chat_contents[-1].set_message(message)

    def clear_last_responder_message(self) -> None:
        """Blank the last answer (so it can be generated again), keeping the turn in place."""
        if self.chat_contents and self.chat_contents[-1].role == self.responder:
            self.chat_contents[-1].set_message(None)

    remove_last_responder_message = clear_last_responder_message  # the 0.3 name

    def drop_oldest_turn(self) -> bool:
        """Remove the oldest requester/responder exchange; False when only the last request is left."""
        requester_positions = [i for i, c in enumerate(self.chat_contents) if c.role == self.requester]
        if len(requester_positions) < 2:
            return False
        del self.chat_contents[: requester_positions[1]]
        return True

    # -- output ------------------------------------------------------------------------------------

    @abstractmethod
    def create_prompt(self, omit_last_message: bool = False) -> str:
        """The text the model continues: history, then the open responder turn."""

    @abstractmethod
    def get_stop_strs(self) -> list[str]:
        """Strings that end the responder's turn when generated."""

    def get_replacement_when_input(self) -> list[tuple[str, str]] | None:
        return None

    def get_replacement_when_output(self) -> list[tuple[str, str]] | None:
        return None

    @staticmethod
    def replace_string(original: str, replace_list: list[tuple[str, str]] | None) -> str:
        for old, new in replace_list or ():
            original = original.replace(old, new)
        return original

    def copy(self) -> AbstractChatPrompt:
        return copy.deepcopy(self)

    # -- serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {
            "format_version": PROMPT_FORMAT_VERSION,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "system": self.system,
            "requester": self.requester,
            "responder": self.responder,
            "chat_mode": self.chat_mode,
            "chat_contents": [c.to_dict() for c in self.chat_contents],
        }

    @classmethod
    def from_dict(cls, data: dict, **init_kwargs: Any) -> AbstractChatPrompt:
        """Rebuild a prompt saved with ``to_dict``; ``init_kwargs`` go to the constructor (a tokenizer)."""
        version = data.get("format_version", PROMPT_FORMAT_VERSION)
        if version > PROMPT_FORMAT_VERSION:
            raise ValueError(
                f"chat prompt data has format_version {version}, newer than this chatstream understands "
                f"({PROMPT_FORMAT_VERSION}); upgrade chatstream to load it"
            )
        prompt = cls(**init_kwargs)
        prompt.system = data["system"]
        prompt.requester = data["requester"]
        prompt.responder = data["responder"]
        prompt.chat_mode = data.get("chat_mode", True)
        prompt.chat_contents = [ChatContent.from_dict(c) for c in data["chat_contents"]]
        return prompt


class ChatPromptFromTemplate(AbstractChatPrompt):
    """Builds the prompt with the tokenizer's own ``chat_template`` (``apply_chat_template``).

    Works with any model whose tokenizer ships a chat template, with no hand-written class.
    """

    def __init__(self, tokenizer: Any = None, system: str = "") -> None:
        if tokenizer is None:
            raise ConfigurationError(
                "ChatPromptFromTemplate needs the tokenizer whose chat_template it applies: "
                "ChatPromptFromTemplate(tokenizer=tokenizer). ChatStream passes it for you."
            )
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigurationError(
                "the tokenizer has no `chat_template`; pass a hand-written prompt class as "
                "`chat_prompt_clazz` (see chatstream.chat_prompt_presets) or set tokenizer.chat_template."
            )
        self.tokenizer = tokenizer
        super().__init__()
        self.system = system

    def messages(self, omit_last_message: bool = False) -> list[dict]:
        """The history as ``[{"role": ..., "content": ...}]``, the open (None) answer left out."""
        contents = self.chat_contents[:-1] if omit_last_message else self.chat_contents
        out = [{"role": "system", "content": self.system}] if self.system else []
        for content in contents:
            if content.message is None:
                continue
            role = "user" if content.role == self.requester else "assistant"
            out.append({"role": role, "content": content.message})
        return out

    def create_prompt(self, omit_last_message: bool = False) -> str:
        contents = self.chat_contents[:-1] if omit_last_message else self.chat_contents
        open_turn = bool(contents) and contents[-1].role == self.responder and contents[-1].message is None
        return self.tokenizer.apply_chat_template(
            self.messages(omit_last_message), tokenize=False, add_generation_prompt=open_turn
        )

    def get_stop_strs(self) -> list[str]:
        return []  # the template's end-of-turn token is the EOS id, handled by the decode loop

    def copy(self) -> ChatPromptFromTemplate:
        clone = copy.copy(self)
        clone.chat_contents = [ChatContent(c.role, c.message) for c in self.chat_contents]
        return clone

    def __deepcopy__(self, memo: dict) -> ChatPromptFromTemplate:
        return self.copy()
