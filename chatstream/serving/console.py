"""Chat with a model in the terminal, tokens streaming as they are generated.

``python -m chatstream.serving.console [--model PATH]`` (or ``chatstream chat``) uses the bundled tiny model by
default. Commands at the prompt: ``/clear`` forgets the conversation, ``/exit`` (or EOF) quits.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TextIO

from ..engine.chat_prompt import AbstractChatPrompt
from ..engine.generation import ChatGenerator, GenerationParams


def run_console_chat(
    generator: ChatGenerator,
    new_prompt: Callable[[], AbstractChatPrompt],
    read_line: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
) -> AbstractChatPrompt:
    """Read a line, stream the answer, repeat until ``/exit`` or EOF. Returns the final conversation."""
    prompt = new_prompt()
    while True:
        try:
            line = read_line("you> ")
        except EOFError:
            out.write("\n")
            return prompt
        text = line.strip()
        if text == "/exit":
            return prompt
        if text == "/clear":
            prompt = new_prompt()
            out.write("(conversation cleared)\n")
            continue
        if not text:
            continue
        prompt.add_requester_msg(text)
        prompt.add_responder_msg(None)
        out.write("bot> ")
        answer = ""
        for delta in generator.stream(prompt):
            answer += delta
            out.write(delta)
            out.flush()
        out.write("\n")
        prompt.set_responder_last_msg(answer)


def main(argv: list[str] | None = None) -> int:
    from ..bundled import bundled_model_path
    from ..engine.chat_prompt import ChatPromptFromTemplate
    from ..engine.device import resolve_device
    from ..engine.model_loading import DTYPES, check_checkpoint_fits, load_model
    from ..engine.model_source import resolve_model_dir
    from ..engine.prefix_cache import check_prefix_cache_mb
    from ..exceptions import ConfigurationError
    from ._cli_options import (
        MODEL_HELP,
        add_sampling_arguments,
        add_stopping_arguments,
        generation_kwargs,
        prompt_class,
    )

    parser = argparse.ArgumentParser(prog="chatstream chat", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--dtype", default="auto", choices=tuple(DTYPES),
                        help="the weights' dtype on the device (default: auto, the checkpoint's own)")
    parser.add_argument("--prefix-cache-mb", type=float, default=None, metavar="MB",
                        help="memory for cached prompt prefixes (default: the device's; 0: off)")
    add_sampling_arguments(parser)  # the generation options serve has, with the same defaults
    add_stopping_arguments(parser)
    args = parser.parse_args(argv)

    try:  # every argument is checked before the model loads
        path = resolve_model_dir(args.model, what="--model") if args.model else bundled_model_path()
        device = resolve_device(args.device)
        params = GenerationParams(**generation_kwargs(args))
        check_checkpoint_fits(path, args.dtype, device)
        check_prefix_cache_mb(args.prefix_cache_mb)
    except ConfigurationError as error:
        parser.error(str(error))
    model, tokenizer = load_model(path, device, args.dtype, progress=False)
    generator = ChatGenerator(model, tokenizer, device, params, prefix_cache_mb=args.prefix_cache_mb)
    preset = prompt_class(args.prompt_preset)
    print(f"chatting with {path} on {device}; /clear forgets, /exit quits")
    run_console_chat(generator, (lambda: ChatPromptFromTemplate(tokenizer)) if preset is None else preset)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
