"""Command-line options that ``chatstream serve`` and ``chatstream chat`` share."""

from __future__ import annotations

from typing import Any

from ..engine.chat_prompt_presets import PROMPT_PRESETS
from ..engine.generation import GenerationParams

MODEL_HELP = ("local HF model directory, a Hub id (org/name) already in the local HF cache (nothing is downloaded), "
              "or `bundled` (default: the bundled tiny model)")

# the generation options of the command line: (GenerationParams field, type); defaults come from GenerationParams
SAMPLING_OPTIONS: tuple[tuple[str, type], ...] = (
    ("max_new_tokens", int), ("context_len", int), ("temperature", float), ("top_k", int), ("top_p", float),
    ("repetition_penalty", float), ("seed", int))


def add_sampling_arguments(group: Any, names: tuple[str, ...] = tuple(n for n, _ in SAMPLING_OPTIONS)) -> None:
    """``--max-new-tokens``, ``--temperature``, ... (those in ``names``), defaulting to GenerationParams'."""
    for name, kind in SAMPLING_OPTIONS:
        if name in names:
            group.add_argument("--" + name.replace("_", "-"), type=kind, default=getattr(GenerationParams, name))


def generation_kwargs(args: Any) -> dict[str, Any]:
    """The GenerationParams arguments given on the command line (sampling and stopping options)."""
    kwargs = {name: getattr(args, name) for name, _ in SAMPLING_OPTIONS if hasattr(args, name)}
    return {**kwargs, "stop_strings": args.stop_strings, "eos_token_ids": args.eos_token_ids}


def add_stopping_arguments(group: Any) -> None:
    """The options that say where an answer ends and how prompts are written (serve and chat)."""
    group.add_argument("--stop", action="append", default=[], metavar="TEXT", dest="stop_strings",
                       help="end the answer at TEXT (repeatable), on top of the prompt format's own stop strings")
    group.add_argument("--eos-token-id", action="append", default=[], type=int, metavar="ID", dest="eos_token_ids",
                       help="end the answer at token ID (repeatable), for a model whose EOS is not its "
                            "template's end-of-turn token")
    group.add_argument("--prompt-preset", default="template", choices=("template", *sorted(PROMPT_PRESETS)),
                       help="prompt format: the tokenizer's chat_template (default), or a hand-written preset "
                            "for a model without one")


def prompt_class(preset: str) -> Any:
    """The prompt class for ``--prompt-preset``: None (the tokenizer's template) or a preset class."""
    return None if preset == "template" else PROMPT_PRESETS[preset]
