"""Chat history and the prompt built from it.

``AbstractChatPrompt`` keeps the system message and the requester (user) / responder (AI) turns and
turns them into the text the model continues. Subclasses decide the format: ``ChatPromptFromTemplate``
uses the tokenizer's own ``chat_template``; hand-written presets live in ``chat_prompt_presets``.
Prompts serialise to plain JSON-able dicts (``to_dict`` / ``from_dict``) so a session store can keep them.

The ChatStream 0.3 prompt surface is kept: ``create_prompt(opts)`` takes 0.3's dict
(``{"omit_last_message": bool, "to_message_id": str}``) or a bool, messages carry a ``message_id``,
and ``get_contents`` / ``get_skip_len`` / ``remove_last_*_msg`` / ``find_chat_content_by_message_id``
work as in 0.3. ``build_initial_prompt(chat_prompt)`` is not run by ``__init__``: whoever makes a new
conversation (ChatStream) calls it once the object, roles included, is fully built, as 0.3's request
handler did.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

from ..exceptions import ConfigurationError

PROMPT_FORMAT_VERSION = 1


def prompt_options(opts: dict | bool | None = None) -> dict:
    """``create_prompt``'s argument as 0.3's dict: a bool means ``{"omit_last_message": bool}``."""
    if opts is None:
        return {}
    if isinstance(opts, bool):
        return {"omit_last_message": opts}
    if isinstance(opts, dict):
        return opts
    raise TypeError(f"`opts` (={opts!r}) must be a dict such as {{'omit_last_message': True}}, a bool, or None.")


class ChatContent:
    """One message: who said it (a role name), what was said (None while not generated yet), its id."""

    def __init__(self, role: str, msg: str | None = "", message_id: str | None = None) -> None:
        self.role = role
        self.message = msg
        self.message_id = message_id

    def get_role(self) -> str:
        return self.role

    def get_message(self) -> str | None:
        return self.message

    def set_message(self, msg: str | None) -> None:
        self.message = msg

    def get_message_id(self) -> str | None:
        return self.message_id

    def set_message_id(self, message_id: str | None) -> None:
        self.message_id = message_id

    def to_dict(self) -> dict:
        data = {"role": self.role, "message": self.message}
        if self.message_id is not None:
            data["message_id"] = self.message_id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ChatContent:
        return cls(data["role"], data["message"], data.get("message_id"))

    def __repr__(self) -> str:
        return f"ChatContent(role={self.role!r}, message={self.message!r}, message_id={self.message_id!r})"


class AbstractChatPrompt(ABC):
    """A builder of chat prompts in the format a model was trained on.

    A subclass sets its role names in ``__init__`` (after ``super().__init__()``) and may override
    ``build_initial_prompt`` to start every conversation the same way (a system message, example turns).
    """

    def __init__(self) -> None:
        self.system = ""
        self.chat_contents: list[ChatContent] = []
        self.requester = "user"
        self.responder = "assistant"
        self.chat_mode = True

    # -- setup -------------------------------------------------------------------------------------

    def build_initial_prompt(self, chat_prompt: AbstractChatPrompt | None = None) -> None:
        """Start a new conversation (system message, example turns); called once after construction by
        ChatStream, never by ``__init__``, so the subclass's roles are set. ``chat_prompt`` is self (0.3)."""
        return None

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

    remove_last_responder_message = clear_last_responder_message  # the 0.2 name

    def remove_last_requester_msg(self) -> None:
        """Delete the last message when it is the requester's (0.3)."""
        if self.chat_contents and self.chat_contents[-1].role == self.requester:
            self.chat_contents.pop()

    def remove_last_responder_msg(self) -> None:
        """Delete the last message when it is the responder's (0.3)."""
        if self.chat_contents and self.chat_contents[-1].role == self.responder:
            self.chat_contents.pop()

    def set_responder_last_msg_id(self, message_id: str | None) -> None:
        """Give the last (responder's) message an id, as the request handler does for each answer (0.3)."""
        if not self.chat_contents or self.chat_contents[-1].role != self.responder:
            raise ValueError("the last message is not the responder's; call add_responder_msg first")
        self.chat_contents[-1].set_message_id(message_id)

    def find_chat_content_by_message_id(self, message_id: str) -> ChatContent | None:
        for content in self.chat_contents:
            if content.message_id is not None and content.message_id == message_id:
                return content
        return None

    def is_requester_role(self, role: str) -> bool:
        return role == self.requester

    def get_contents(self, opts: dict | bool | None = None) -> list[ChatContent]:
        """The messages a prompt is built from (0.3). ``opts``: ``{"omit_last_message": True}`` gives the
        last message as an open turn (its role, message None); ``{"to_message_id": id}`` stops after the
        message with that id. A bool is taken as ``omit_last_message``."""
        options = prompt_options(opts)
        omit_last = bool(options.get("omit_last_message", False))
        to_message_id = options.get("to_message_id")
        contents = []
        for index, content in enumerate(self.chat_contents):
            if omit_last and index == len(self.chat_contents) - 1:
                contents.append(ChatContent(content.role, None))
            else:
                contents.append(content)
            if to_message_id is not None and content.message_id == to_message_id:
                break
        return contents

    def get_skip_len(self, omit_last_message: bool = False) -> int:
        """The length of the prompt text (with the last message left open when ``omit_last_message``), 0.3's
        way of cutting the prompt off a decoded sequence."""
        return len(self.create_prompt({"omit_last_message": omit_last_message}))

    def drop_oldest_turn(self) -> bool:
        """Remove the oldest requester/responder exchange; False when only the last request is left."""
        requester_positions = [i for i, c in enumerate(self.chat_contents) if c.role == self.requester]
        if len(requester_positions) < 2:
            return False
        del self.chat_contents[: requester_positions[1]]
        return True

    # -- output ------------------------------------------------------------------------------------

    @abstractmethod
    def create_prompt(self, opts: dict | bool | None = None) -> str:
        """The text the model continues: history, then the open responder turn. ``opts`` is 0.3's dict
        (``omit_last_message``, ``to_message_id``, see ``get_contents``) or a bool ``omit_last_message``."""

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
                "`chat_prompt_clazz` (see chatstream.engine.chat_prompt_presets) or set tokenizer.chat_template."
            )
        self.tokenizer = tokenizer
        super().__init__()
        self.system = system

    def messages(self, opts: dict | bool | None = None) -> list[dict]:
        """The history as ``[{"role": ..., "content": ...}]``, the open (None) answer left out."""
        contents = self.get_contents(opts)
        out = [{"role": "system", "content": self.system}] if self.system else []
        for content in contents:
            if content.message is None:
                continue
            role = "user" if content.role == self.requester else "assistant"
            out.append({"role": role, "content": content.message})
        return out

    def create_prompt(self, opts: dict | bool | None = None) -> str:
        contents = self.get_contents(opts)
        open_turn = bool(contents) and contents[-1].role == self.responder and contents[-1].message is None
        return self.tokenizer.apply_chat_template(self.messages(opts), tokenize=False, add_generation_prompt=open_turn)

    def get_stop_strs(self) -> list[str]:
        return []  # the template's end-of-turn token is the EOS id, handled by the decode loop

    def copy(self) -> ChatPromptFromTemplate:
        clone = copy.copy(self)
        clone.chat_contents = [ChatContent(c.role, c.message, c.message_id) for c in self.chat_contents]
        return clone

    def __deepcopy__(self, memo: dict) -> ChatPromptFromTemplate:
        return self.copy()
