"""``chatstream cassette``: list, show, diff, verify and prune cassettes from the shell.

    chatstream cassette list DIR                 # each cassette under DIR: size, recorded_at, device, ...
    chatstream cassette show PATH                # its conversations as text, sampling, manifest facts
    chatstream cassette diff A B                 # where two recordings of the same answers part
    chatstream cassette verify PATH --model M    # replay its answers through the live model and compare
    chatstream cassette prune DIR [--yes]        # remove what the last plain pytest run did not use

Every command prints plain text, or one JSON document with ``--json``. Exit codes:

    0  done; for diff / verify: identical or within tolerance
    1  diff / verify: the recordings diverged
    2  usage error (bad arguments)
    3  a cassette (or the model) could not be read: missing, damaged, not a cassette
    4  prune: no unused-cassette report in DIR (run a plain ``pytest`` first), or a stale one

Reading a cassette needs torch only; ``verify`` also loads the model with transformers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..cassettes import cassette as fmt
from ..cassettes._cassette_generations import Generation, conversations, generations
from ..cassettes._cassette_miss import MissExplainer
from ..cassettes._unused_report import UNUSED_REPORT_NAME, read_unused_report
from ..exceptions import CassetteError, ConfigurationError
from ._tool_checks import folder_of_cassettes, vocabulary_mismatch

EXIT_OK = 0
EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_NO_REPORT = 4


class ToolError(Exception):
    """A command that cannot go on: the message for stderr and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- reading cassettes ---------------------------------------------------------------------------------


def _load(path: str | os.PathLike, command: str = "show") -> fmt.Cassette:
    try:
        return fmt.load_cassette(path)
    except CassetteError as error:
        raise ToolError(folder_of_cassettes(Path(path), command) or str(error), EXIT_UNREADABLE) from None


def find_cassettes(directory: Path) -> list[Path]:
    """Every cassette directory under ``directory`` (itself included), skipping hidden (staging) directories."""
    if not directory.is_dir():
        raise ToolError(f"DIR (={str(directory)!r}) is not a directory; pass the directory that holds the "
                        "cassettes (the plugin's default is fixtures/cassettes).", EXIT_UNREADABLE)
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if fmt.MANIFEST_NAME in files:
            found.append(Path(root))
            dirs[:] = []
    return found


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def _eos_ids(manifest: dict) -> set[int]:
    ids = set()
    for value in ((manifest.get("tokenizer") or {}).get("special_token_ids") or {}).get("eos_token_id"), \
            ((manifest.get("model") or {}).get("generation_config") or {}).get("eos_token_id"):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def facts(cassette: fmt.Cassette) -> dict:
    """The manifest's key facts: when, where and with what a cassette was recorded."""
    manifest = cassette.manifest
    model = manifest.get("model") or {}
    versions = manifest.get("versions") or {}
    return {
        "recorded_at": manifest.get("recorded_at"),
        "device": (model.get("device") or {}).get("type"),
        "device_name": (model.get("device") or {}).get("name"),
        "dtype": model.get("dtype"),
        "model_class": model.get("class"),
        "transformers": versions.get("transformers"),
        "torch": versions.get("torch"),
        "chatstream": versions.get("chatstream"),
        "fidelity": cassette.fidelity,
        "test": (manifest.get("extra") or {}).get("test") if isinstance(manifest.get("extra"), dict) else None,
        "token_sampler": (manifest.get("token_sampler") or {}).get("class"),
    }


def _answer_text(tokenizer: Any, explain: MissExplainer, generation: Generation, eos: set[int]) -> tuple[str, bool]:
    """The decoded answer (without a final EOS) and whether it ended on an EOS.

    The tokens go through the streaming detokeniser over the cassette's own tokenizer (a MockTokenizer),
    which asks the decode calls the live run asked; text the recording cannot rebuild comes from the
    recorded pieces, unknown ids shown as ⟨id⟩."""
    from ..engine.detokenizer import StreamingDetokenizer

    tokens = generation.tokens
    ended = bool(tokens) and tokens[-1] in eos
    shown = tokens[:-1] if ended else tokens
    try:
        detokenizer = StreamingDetokenizer(tokenizer, context_ids=generation.prompt_ids or ())
        return "".join(detokenizer.push(t) for t in shown) + detokenizer.finish(), ended
    except CassetteError:
        pass
    if generation.prompt_ids is None:
        return explain.describe(shown), ended
    whole, prompt = explain.describe(generation.prompt_ids + shown), explain.describe(generation.prompt_ids)
    return (whole[len(prompt):] if whole.startswith(prompt) else explain.describe(shown)), ended


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


# -- the commands --------------------------------------------------------------------------------------


def list_cassettes(directory: str | os.PathLike) -> tuple[int, dict]:
    """``list DIR``: one row per cassette; a damaged one is listed with its error (exit 3)."""
    base = Path(directory)
    rows, code = [], EXIT_OK
    for path in find_cassettes(base):
        row: dict[str, Any] = {"path": path.relative_to(base).as_posix() or ".", "bytes": _size(path)}
        try:
            cassette = fmt.load_cassette(path)
        except CassetteError as error:
            row["error"] = str(error)
            code = EXIT_UNREADABLE
        else:
            found = generations(cassette)
            row.update(facts(cassette), conversations=len(conversations(found)), answers=len(found))
        rows.append(row)
    return code, {"command": "list", "dir": str(base), "cassettes": rows}


def show_cassette(path: str | os.PathLike) -> tuple[int, dict]:
    """``show PATH``: the manifest's facts, the sampling settings and each conversation's turns as text."""
    from ..cassettes.replay import MockTransformer

    try:
        replay = MockTransformer.from_path(path)
    except CassetteError as error:
        raise ToolError(str(error), EXIT_UNREADABLE) from None
    cassette, tokenizer = replay.cassette, replay.get_tokenizer()
    explain = MissExplainer(cassette)
    eos = _eos_ids(cassette.manifest)
    shown = []
    for number, group in enumerate(conversations(generations(cassette, explain))):
        turns = []
        before = ""  # the conversation's text so far: the last prompt and its answer
        for generation in group:
            answer, ended = _answer_text(tokenizer, explain, generation, eos)
            prompt = None
            if generation.prompt_ids is not None:  # what this turn added to the conversation so far
                text = explain.describe(generation.prompt_ids)
                start = _common_prefix(before, text)
                prompt = ("…" if start else "") + text[start:]
                before = text + answer
            turns.append({"answer": generation.index, "prompt": prompt, "answer_text": answer,
                          "tokens": len(generation.tokens), "ended_on_eos": ended, "params": generation.params,
                          "seed": generation.seed})
        shown.append({"conversation": number, "turns": turns})
    data = {"command": "show", "path": str(cassette.path), "facts": facts(cassette),
            "sampling": cassette.manifest.get("sampling"), "conversations": shown}
    return EXIT_OK, data


def diff_cassettes(a: str | os.PathLike, b: str | os.PathLike, *, rtol: float | None = None,
                   atol: float | None = None, top_k: int | None = None) -> tuple[int, dict]:
    """``diff A B``: each answer of A against the same answer in B, classified as ``--probe=verify`` does."""
    from ..cassettes.verify import DEFAULT_TOP_K, STATUSES, compare_generations

    _load(a, "diff"), _load(b, "diff")  # the unreadable exit code, before comparing
    compared = compare_generations(a, b, rtol=rtol, atol=atol, top_k=top_k or DEFAULT_TOP_K)
    status = max((c.result.status for c in compared), key=STATUSES.index, default="identical")
    data = {"command": "diff", "a": str(a), "b": str(b), "status": status,
            "answers": [c.to_dict() for c in compared]}
    return (EXIT_DIVERGED if status == "diverged" else EXIT_OK), data


def _load_live(model: str, device: str | None) -> tuple[Any, Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..engine.device import resolve_device
    from ..engine.model_source import resolve_model_dir

    try:
        path = resolve_model_dir(model, what="--model")
        where = resolve_device(device or "cpu")
    except ConfigurationError as error:
        raise ToolError(str(error), EXIT_UNREADABLE) from None
    tokenizer = AutoTokenizer.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path).to(where).eval(), tokenizer, where


def rerun(cassette: fmt.Cassette, model: Any, tokenizer: Any, device: Any, live_dir: Path) -> list[int]:
    """Record into ``live_dir`` the live model answering each of ``cassette``'s prompts with the recorded
    parameters and seed, for as many steps as the recording took; returns the answers it could not rerun."""
    import torch

    from ..cassettes.recording import ProbeRecorder
    from ..engine.generation import decode_tokens
    from ..engine.sampling import SamplingParams
    from ..engine.token_sampler import TokenSamplerIsok

    skipped = []
    with ProbeRecorder(live_dir, fidelity=cassette.fidelity) as recorder:
        live_model, _, sampler = recorder.wrap(model, tokenizer, TokenSamplerIsok(seed=0))
        for generation in generations(cassette):
            if generation.prompt_ids is None:
                skipped.append(generation.index)
                continue
            seed = generation.seed
            tokens = decode_tokens(
                live_model, generation.prompt_ids, sampler=sampler, sampling=SamplingParams(**generation.params),
                max_new_tokens=len(generation.samples), eos_ids=set(), device=device,
                generator=None if seed is None else torch.Generator().manual_seed(seed),
            )
            for _ in tokens:
                pass
            recorder.flush()
    return skipped


def verify_cassette(path: str | os.PathLike, model: str, *, device: str | None = None,
                    live_dir: str | os.PathLike | None = None, rtol: float | None = None,
                    atol: float | None = None, top_k: int | None = None) -> tuple[int, dict]:
    """``verify PATH --model M``: what ``pytest --probe=verify`` does, outside pytest."""
    from ..cassettes.verify import DEFAULT_TOP_K, compare_cassettes

    cassette = _load(path, "verify")
    live_model, tokenizer, where = _load_live(model, device)
    if problem := vocabulary_mismatch(cassette.manifest, live_model, tokenizer, model):
        raise ToolError(problem, EXIT_UNREADABLE)
    temporary = live_dir is None
    target = Path(tempfile.mkdtemp(prefix="chatstream-verify-")) / "live" if temporary else Path(live_dir)
    try:
        skipped = rerun(cassette, live_model, tokenizer, where, target)
        result = compare_cassettes(path, target, rtol=rtol, atol=atol, top_k=top_k or DEFAULT_TOP_K)
    finally:
        if temporary:
            shutil.rmtree(target.parent, ignore_errors=True)
    data = {"command": "verify", "path": str(path), "model": model, "device": str(where),
            "recorded_token_sampler": facts(cassette)["token_sampler"], "answers_not_rerun": skipped,
            **result.to_dict(), "live_dir": None if temporary else str(target)}  # a temporary one is gone
    data["summary"] = str(result)
    return (EXIT_DIVERGED if result.status == "diverged" else EXIT_OK), data


def prune_cassettes(directory: str | os.PathLike, *, yes: bool = False) -> tuple[int, dict]:
    """``prune DIR``: the cassettes the last plain pytest run reported unused; removed only with ``yes``."""
    base = Path(directory)
    try:
        report = read_unused_report(base)
    except FileNotFoundError:
        raise ToolError(f"{base} holds no {UNUSED_REPORT_NAME}: run a plain `pytest` over the whole suite first "
                        "(it writes the list of cassettes no test used), then prune.", EXIT_NO_REPORT) from None
    except ValueError as error:
        raise ToolError(f"{error}; run a plain `pytest` again to rewrite it.", EXIT_NO_REPORT) from None
    recorded_dir = report.get("cassette_dir")
    if recorded_dir is not None and Path(recorded_dir) != base.resolve():
        raise ToolError(f"{base / UNUSED_REPORT_NAME} was written for {recorded_dir}, not {base.resolve()}; run a "
                        "plain `pytest` again.", EXIT_NO_REPORT)
    removable, gone = [], []
    for relative in report["unused"]:
        target = (base / relative).resolve()
        if base.resolve() not in target.parents or not (target / fmt.MANIFEST_NAME).is_file():
            gone.append(relative)  # removed since, or never a cassette inside DIR: never deleted
            continue
        removable.append(relative)
    if yes:
        for relative in removable:
            target = base / relative
            shutil.rmtree(target)
            parent = target.parent
            while parent != base and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
        (base / UNUSED_REPORT_NAME).unlink()
    data = {"command": "prune", "dir": str(base), "dry_run": not yes, "report_written_at": report.get("written_at"),
            "removed" if yes else "would_remove": removable, "skipped": gone}
    return EXIT_OK, data


# -- plain text ----------------------------------------------------------------------------------------


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def render(data: dict) -> str:
    """``data`` of a command as plain text for people."""
    command = data["command"]
    lines: list[str] = []
    if command == "list":
        for row in data["cassettes"]:
            if "error" in row:
                lines.append(f"{row['path']}  {_human_bytes(row['bytes'])}  DAMAGED: {row['error']}")
                continue
            lines.append(f"{row['path']}  {_human_bytes(row['bytes'])}  recorded {row['recorded_at']} on "
                         f"{row['device']} ({row['dtype']}), transformers {row['transformers']}, {row['fidelity']}, "
                         f"{row['conversations']} conversation(s), {row['answers']} answer(s)")
        lines.append(f"{len(data['cassettes'])} cassette(s) under {data['dir']}")
    elif command == "show":
        f = data["facts"]
        lines += [f"cassette {data['path']}",
                  f"  recorded {f['recorded_at']} on {f['device']} ({f['device_name']}), {f['model_class']} "
                  f"{f['dtype']}, transformers {f['transformers']}, torch {f['torch']}, fidelity {f['fidelity']}",
                  f"  sampling: {json.dumps(data['sampling'])}"]
        if f["test"]:
            lines.append(f"  recorded by test {f['test']}")
        for conversation in data["conversations"]:
            lines.append(f"conversation {conversation['conversation'] + 1}:")
            for turn in conversation["turns"]:
                lines.append(f"  prompt: {turn['prompt']!r}")
                end = "EOS" if turn["ended_on_eos"] else "no EOS"
                lines.append(f"  answer: {turn['answer_text']!r}  ({turn['tokens']} tokens, {end}, params "
                             f"{json.dumps(turn['params'], sort_keys=True)}, seed {turn['seed']})")
    elif command == "diff":
        for answer in data["answers"]:
            step = answer["first_divergent_step"]
            where = "" if step is None else f"; step {step}: {_step_summary(answer)}"
            diff = "n/a" if answer["max_logit_diff"] is None else f"{answer['max_logit_diff']:.3g}"
            side = {"both": "", "a": " (only in A)", "b": " (only in B)"}[answer["side"]]
            lines.append(f"answer {answer['index']}{side} {answer['prompt_text']!r}: {answer['status']}, "
                         f"{answer['steps_compared']} steps, max logit diff {diff}{where}")
        lines.append(f"{data['status']}: {len(data['answers'])} answer(s) compared")
    elif command == "verify":
        lines.append(f"{data['path']} against {data['model']} on {data['device']}: {data['summary']}")
        if data["answers_not_rerun"]:
            lines.append(f"  answers not rerun (their prompt is not in the cassette): {data['answers_not_rerun']}")
        if data["recorded_token_sampler"] not in (None, "TokenSamplerIsok"):
            lines.append(f"  note: recorded with the token sampler {data['recorded_token_sampler']}; the rerun "
                         "used TokenSamplerIsok")
    elif command == "prune":
        names = data["removed" if not data["dry_run"] else "would_remove"]
        verb = "would remove" if data["dry_run"] else "removed"
        lines += [f"{verb} {n}" for n in names]
        lines += [f"skipped {n} (no longer a cassette in {data['dir']})" for n in data["skipped"]]
        lines.append(f"{verb} {len(names)} unused cassette(s) (report of {data['report_written_at']})"
                     + ("; pass --yes to remove them" if data["dry_run"] and names else ""))
    return "\n".join(lines)


def _step_summary(answer: dict) -> str:
    from ..cassettes.verify import VerifyResult

    fields = {k: v for k, v in answer.items() if k in VerifyResult.__dataclass_fields__}
    return VerifyResult(**fields).step_summary(sides=("A", "B"))  # two recordings: neither is live


# -- the command line ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatstream cassette", description="Inspect, compare, verify and prune "
                                     "cassettes.", epilog="exit codes: 0 done (identical / within tolerance), 1 "
                                     "diverged, 2 usage error, 3 unreadable cassette or model, 4 no unused report",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--json", action="store_true", help="print one JSON document instead of text")
        return sub

    command("list", "each cassette under DIR with its size and recording facts").add_argument("dir", metavar="DIR")
    command("show", "a cassette's conversations as text").add_argument("path", metavar="PATH")
    diff = command("diff", "where two recordings of the same answers part")
    diff.add_argument("a", metavar="A")
    diff.add_argument("b", metavar="B")
    verify = command("verify", "replay a cassette's answers through the live model and compare")
    verify.add_argument("path", metavar="PATH")
    verify.add_argument("--model", required=True, help="local HF model directory or cached Hub id")
    verify.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N or mps")
    verify.add_argument("--live-dir", default=None, help="keep the live recording here (default: a temporary dir)")
    for sub in (diff, verify):
        sub.add_argument("--rtol", type=float, default=None, help="relative tolerance (default: by dtype)")
        sub.add_argument("--atol", type=float, default=None, help="absolute tolerance (default: by dtype)")
        sub.add_argument("--top-k", type=int, default=None, help="a differing token is within tolerance when "
                         "each side's is in the other's top k (default: 5)")
    prune = command("prune", "remove the cassettes the last plain pytest run did not use (dry run unless --yes)")
    prune.add_argument("dir", metavar="DIR")
    prune.add_argument("--yes", action="store_true", help="really remove them")
    return parser


def run(args: argparse.Namespace) -> tuple[int, dict]:
    tolerances = {k: getattr(args, k, None) for k in ("rtol", "atol", "top_k")}
    if args.command == "list":
        return list_cassettes(args.dir)
    if args.command == "show":
        return show_cassette(args.path)
    if args.command == "diff":
        return diff_cassettes(args.a, args.b, **tolerances)
    if args.command == "verify":
        return verify_cassette(args.path, args.model, device=args.device, live_dir=args.live_dir, **tolerances)
    return prune_cassettes(args.dir, yes=args.yes)


def main(argv: list[str] | None = None) -> int:
    """``chatstream cassette ...``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code, data = run(args)
    except ToolError as error:
        if args.json:
            print(json.dumps({"command": args.command, "error": str(error), "exit_code": error.code}))
        print(f"chatstream cassette {args.command}: {error}", file=sys.stderr)
        return error.code
    print(json.dumps(data, indent=1, ensure_ascii=False) if args.json else render(data))
    return code
