"""The `glmtune` command: inference on a fine-tuned model (adapter or merged folder)."""

from __future__ import annotations

import argparse
import logging
import sys

from .io import read_jsonl


def infer(args: argparse.Namespace) -> int:
    from .inference import Chat, batch_file, interactive

    chat = Chat(args.model_dir, args.base_model, args.template, args.max_new_tokens, args.batch_size)
    if args.prompt is not None:
        print(chat.answer([[{"role": "user", "content": args.prompt}]])[0])
    elif args.input:
        with open(args.output, "w", encoding="utf-8") if args.output else sys.stdout as out:
            count = batch_file(chat, read_jsonl(args.input), out)
        print(f"answered {count} prompts", file=sys.stderr)
    else:
        interactive(chat)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glmtune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("infer", help="answer prompts with a merged model folder or a LoRA adapter folder")
    p.add_argument("model_dir", help="results/merged_model, results/train/adapter, or any model folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prompt", help="answer one prompt and exit")
    mode.add_argument("--input", help='JSON lines of {"prompt": ...} or {"messages": [...]} to answer in batches')
    mode.add_argument("--interactive", action="store_true", help="chat on the terminal (the default without --prompt/--input)")
    p.add_argument("--output", help="where --input answers go (default: stdout)")
    p.add_argument("--base-model", help="base model folder for an adapter whose recorded base has moved")
    p.add_argument("--template", choices=["glm4", "chatglm3"], help="chat template (default: detected from the tokenizer)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.set_defaults(func=infer)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep answers readable on the terminal
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
