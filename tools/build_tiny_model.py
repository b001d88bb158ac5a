"""Build the tiny chat model bundled in ``fixtures/tiny-chat``.

Everything is generated here, nothing is downloaded: a small English/Japanese chat corpus (with emoji,
so multi-byte UTF-8 gets exercised), a byte-level BPE tokenizer trained on it with a ChatML chat
template, and a small ``LlamaForCausalLM`` trained on CPU until greedy decoding answers a greeting
with the canned reply. Seeds are fixed, so the output is the same for the same torch version.

    python tools/build_tiny_model.py [--out fixtures/tiny-chat] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from collections import deque
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from chatstream.engine.chat_prompt_presets import ChatPromptChatML

SEED = 20240601
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "fixtures" / "tiny-chat"

ENDOFTEXT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, PAD]  # ids 0..3, in this order
VOCAB_SIZE = 1280

# ChatML, rendering exactly what chatstream.engine.chat_prompt_presets.ChatPromptChatML builds.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# (ways a user may ask, the one canned reply). English and Japanese intents are kept apart so the
# reply's language follows the question's.
INTENTS_EN: list[tuple[list[str], str]] = [
    (["Hello", "Hi", "Hey", "Hello there", "Hi there", "Good morning", "Hey there"],
     "Hello! How can I help you today?"),
    (["Thank you", "Thanks", "Thanks a lot", "Thank you very much", "Many thanks"],
     "You're welcome! 😊"),
    (["What is your name?", "Who are you?", "What's your name?", "Tell me your name"],
     "I am Tiny Chat, a small demo model."),
    (["How is the weather?", "What's the weather like today?", "Is it sunny today?", "Weather today?"],
     "It is sunny and warm today. ☀️"),
    (["Do you like cats?", "Tell me about cats", "What do you think of cats?", "Cats or dogs?"],
     "I love cats 🐱! They are cute and playful."),
    (["Do you like dogs?", "Tell me about dogs", "What do you think of dogs?"],
     "Dogs are great 🐶! They are loyal friends."),
    (["How are you?", "How are you doing?", "How's it going?", "Are you well?"],
     "I'm fine, thank you! How about you?"),
    (["Goodbye", "Bye", "See you later", "Good night", "See you"],
     "Goodbye! Have a nice day! 👋"),
    (["What can you do?", "Can you help me?", "What are you good at?", "Help"],
     "I can answer simple questions and chat with you."),
    (["Tell me a joke", "Say something funny", "Do you know a joke?"],
     "Why did the cat sit on the computer? To keep an eye on the mouse! 😄"),
    (["What is your favorite food?", "What do you like to eat?", "Favorite food?"],
     "I like sushi 🍣 and ramen 🍜."),
    (["Where are you from?", "Where do you live?", "Where were you made?"],
     "I live inside a small computer. 💻"),
    (["What color is the sky?", "Why is the sky blue?", "Sky color?"],
     "The sky is blue on a clear day. 🌤️"),
    (["Do you speak Japanese?", "Can you speak Japanese?", "Japanese please"],
     "Yes, I speak a little Japanese. 日本語も少し話せます。"),
]
INTENTS_JA: list[tuple[list[str], str]] = [
    (["こんにちは", "こんばんは", "おはよう", "おはようございます", "やあ", "どうも"],
     "こんにちは！今日はどんなご用ですか？"),
    (["ありがとう", "ありがとうございます", "どうもありがとう", "感謝します"],
     "どういたしまして！😊"),
    (["お名前は？", "あなたは誰ですか？", "名前を教えて", "あなたの名前は？"],
     "私はタイニーチャットです。小さなデモ用モデルです。"),
    (["今日の天気は？", "天気はどうですか？", "今日は晴れですか？", "天気を教えて"],
     "今日は晴れて暖かいです。☀️"),
    (["猫は好きですか？", "猫について教えて", "猫ってどう思う？"],
     "猫が大好きです🐱！かわいくて遊び好きです。"),
    (["犬は好きですか？", "犬について教えて", "犬ってどう思う？"],
     "犬は最高です🐶！忠実な友達です。"),
    (["お元気ですか？", "元気？", "調子はどう？", "元気ですか"],
     "元気です、ありがとう！あなたはどうですか？"),
    (["さようなら", "またね", "おやすみなさい", "バイバイ", "じゃあね"],
     "さようなら！良い一日を！👋"),
    (["何ができますか？", "手伝ってくれる？", "何が得意ですか？", "助けて"],
     "簡単な質問に答えたり、おしゃべりしたりできます。"),
    (["冗談を言って", "何か面白いことを言って", "ジョークを教えて"],
     "布団が吹っ飛んだ！😄"),
    (["好きな食べ物は？", "何を食べるのが好き？", "好きな料理は何ですか？"],
     "お寿司🍣とラーメン🍜が好きです。"),
    (["どこから来たの？", "どこに住んでいますか？", "出身はどこ？"],
     "小さなコンピューターの中に住んでいます。💻"),
    (["空は何色？", "なぜ空は青いの？", "空の色は？"],
     "晴れた日の空は青いです。🌤️"),
    (["英語を話せますか？", "英語で話して", "英語できる？"],
     "はい、英語も話せます。I speak English too."),
]
SYSTEM_MESSAGES = [
    "You are a helpful assistant.",
    "You are Tiny Chat, a friendly assistant.",
    "Answer briefly.",
    "あなたは親切なアシスタントです。",
    "短く答えてください。",
]
GREEDY_CHECKS = ["Hello", "こんにちは", "Thank you", "猫は好きですか？", "What is your name?"]


def _vary_en(rng: random.Random, text: str) -> str:
    stem = text.rstrip("?!.")
    ending = rng.choice(["?", "?", "", "??"] if text.endswith("?") else ["", "", "!", ".", "!!"])
    casing = rng.random()
    if casing < 0.25:
        stem = stem.lower()
    elif casing < 0.35:
        stem = stem.upper()
    elif casing < 0.45:
        stem = stem.title()
    return stem + ending


def _vary_ja(rng: random.Random, text: str) -> str:
    stem = text.rstrip("？！。?!")
    if text[-1:] in "？?":
        return stem + rng.choice(["？", "？", "?", ""])
    return stem + rng.choice(["", "", "！", "。", "!"])


def make_corpus(rng: random.Random, n_conversations: int) -> list[tuple[str, list[tuple[str, str]]]]:
    """``(system, [(user, assistant), ...])`` conversations; every single-turn ask appears at least once."""
    conversations: list[tuple[str, list[tuple[str, str]]]] = []
    for intents, vary in ((INTENTS_EN, _vary_en), (INTENTS_JA, _vary_ja)):
        for asks, reply in intents:
            for ask in asks:
                conversations.append(("", [(ask, reply)]))
                conversations.append(("", [(vary(rng, ask), reply)]))
    while len(conversations) < n_conversations:
        system = rng.choice(SYSTEM_MESSAGES) if rng.random() < 0.3 else ""
        turns = []
        for _ in range(rng.choice([1, 1, 2, 2, 3])):
            intents, vary = (INTENTS_EN, _vary_en) if rng.random() < 0.5 else (INTENTS_JA, _vary_ja)
            asks, reply = rng.choice(intents)
            turns.append((vary(rng, rng.choice(asks)), reply))
        conversations.append((system, turns))
    rng.shuffle(conversations)
    return conversations


def chatml(system: str, turns: list[tuple[str, str | None]]) -> str:
    prompt = ChatPromptChatML()
    prompt.set_system(system)
    for user, assistant in turns:
        prompt.add_requester_msg(user)
        prompt.add_responder_msg(assistant)
    return prompt.create_prompt()


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode_example(tokenizer: PreTrainedTokenizerFast, system: str, turns: list[tuple[str, str]]):
    """Token ids of one ChatML conversation and the labels: loss on assistant replies + their <|im_end|>."""
    ids: list[int] = []
    labels: list[int] = []
    for i, (user, reply) in enumerate(turns):
        # Each piece starts right after "\n" or a special token, where byte-level BPE never merges across,
        # so encoding piecewise gives the same ids as encoding the whole text (checked below).
        prompt_part = chatml(system if i == 0 else "", [(user, None)])
        reply_part = reply + IM_END
        prompt_ids = tokenizer.encode(prompt_part, add_special_tokens=False)
        reply_ids = tokenizer.encode(reply_part, add_special_tokens=False)
        newline_ids = tokenizer.encode("\n", add_special_tokens=False)
        ids += prompt_ids + reply_ids + newline_ids
        labels += [-100] * len(prompt_ids) + reply_ids + [-100] * len(newline_ids)
    whole = tokenizer.encode(chatml(system, turns), add_special_tokens=False)
    if whole != ids:
        raise RuntimeError(f"piecewise encoding differs from whole encoding for {turns!r}")
    return ids, labels


def make_batches(examples, batch_size: int, pad_id: int, rng: random.Random):
    """Endless shuffled batches, padded on the right."""
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [examples[i] for i in order[start : start + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            input_ids = torch.full((batch_size, width), pad_id, dtype=torch.long)
            labels = torch.full((batch_size, width), -100, dtype=torch.long)
            mask = torch.zeros((batch_size, width), dtype=torch.long)
            for row, (ids, labs) in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                labels[row, : len(labs)] = torch.tensor(labs)
                mask[row, : len(ids)] = 1
            yield input_ids, mask, labels


def make_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.02,
    )
    return LlamaForCausalLM(config)


def train(model: LlamaForCausalLM, batches, steps: int, lr: float = 3e-3) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(1, steps // 20)

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    recent: deque[float] = deque(maxlen=20)
    for step in range(steps):
        input_ids, mask, labels = next(batches)
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        recent.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  (mean of last {len(recent)}: "
                  f"{sum(recent) / len(recent):.4f})", flush=True)
    model.eval()
    return sum(recent) / len(recent)


@torch.inference_mode()
def greedy_reply(model, tokenizer, user: str, max_new_tokens: int = 40) -> str:
    text = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)
    input_ids = torch.tensor([tokenizer.encode(text, add_special_tokens=False)])
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                         max_new_tokens=max_new_tokens)
    return tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out: Path) -> None:
    # The template goes inside tokenizer_config.json and the class is named PreTrainedTokenizerFast, so
    # transformers 4.x (no chat_template.jinja, no TokenizersBackend class) loads it as well as 5.x.
    tokenizer.save_pretrained(out, save_jinja_files=False)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_readme(out: Path, model: LlamaForCausalLM, steps: int, vocab_size: int, final_loss: float) -> None:
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    (out / "README.md").write_text(
        "# tiny-chat\n\n"
        "A tiny ChatML chat model bundled with ChatStream for tests, demos and `chatstream serve` without a\n"
        "download. It knows a few canned English/Japanese answers (greetings, thanks, name, weather, cats 🐱, ...)\n"
        "and nothing else.\n\n"
        f"- `LlamaForCausalLM`, {n_params:,} parameters (hidden {config.hidden_size}, "
        f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads, tied embeddings), fp32\n"
        f"- byte-level BPE tokenizer trained with `tokenizers`, vocab {vocab_size}, specials "
        f"`{ENDOFTEXT}` `{IM_START}` `{IM_END}` `{PAD}`\n"
        f"- ChatML chat template; EOS is `{IM_END}`\n"
        f"- trained from scratch on a generated corpus for {steps} AdamW steps (final loss {final_loss:.4f})\n\n"
        "Rebuild (deterministic for a given torch version, a few minutes on 2 CPU cores):\n\n"
        "    python tools/build_tiny_model.py --out fixtures/tiny-chat\n",
        encoding="utf-8",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (replaced)")
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    started = time.perf_counter()

    conversations = make_corpus(rng, n_conversations=3000)
    texts = [chatml(system, turns) for system, turns in conversations]
    tokenizer = train_tokenizer(texts)
    im_start_id, im_end_id = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    print(f"corpus: {len(texts)} conversations; vocab {len(tokenizer)}; "
          f"{IM_START}={im_start_id} {IM_END}={im_end_id} pad={tokenizer.pad_token_id}")

    examples = [encode_example(tokenizer, system, turns) for system, turns in conversations]
    model = make_model(tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters")
    batches = make_batches(examples, args.batch_size, tokenizer.pad_token_id, rng)
    train_started = time.perf_counter()
    final_loss = train(model, batches, args.steps)
    print(f"trained {args.steps} steps in {time.perf_counter() - train_started:.1f}s; "
          f"final loss {final_loss:.4f}")

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=im_end_id, pad_token_id=tokenizer.pad_token_id
    )
    if args.out.exists():
        shutil.rmtree(args.out)
    model.save_pretrained(args.out)
    save_tokenizer(tokenizer, args.out)
    write_readme(args.out, model, args.steps, len(tokenizer), final_loss)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"saved to {args.out} ({size / 1e6:.2f} MB): {sorted(f.name for f in args.out.iterdir())}")

    for user in GREEDY_CHECKS:
        print(f"greedy: {json.dumps(user, ensure_ascii=False)} -> "
              f"{json.dumps(greedy_reply(model, tokenizer, user), ensure_ascii=False)}")
    print(f"total time {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
