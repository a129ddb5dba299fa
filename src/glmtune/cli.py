"""The `glmtune` command: inference on a fine-tuned model (adapter or merged folder), and benchmarks."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from glmtune.bench.stage import RECIPES
from glmtune.evaluate.backend import BACKENDS
from glmtune.family import DEFAULT_FAMILY, FAMILIES
from glmtune.io import atomic_path

if TYPE_CHECKING:
    from glmtune.inference import Chat, Located


def infer(args: argparse.Namespace) -> int:
    from glmtune.inference import Chat, interactive

    located = infer_requests(args)  # the input first: a bad one stops before any folder is read
    chat = Chat(args.model_dir, args.base_model, args.template, args.max_new_tokens, args.batch_size, args.trust_remote_code)
    if located is None:
        chat.load()  # before the first question, not after it
        interactive(chat)
    else:
        # "--output -": the JSON lines on stdout (the text alone is --prompt's without --output)
        write_answers(chat, located, None if args.output == "-" else args.output,
                      print_text=args.input is None and args.output is None)
    return 0


def infer_requests(args: argparse.Namespace) -> list[Located] | None:
    """The requests of --input or --prompt (None: the interactive chat), and --output checked against them: each
    refused (BadRequest) before the folders and the weights are touched."""
    from glmtune.inference import BadRequest, located_requests, prompt_request

    if args.output is not None and args.input is None and args.prompt is None:  # else it would be silently unused
        raise BadRequest("--output is for the answers of --prompt or --input; the interactive chat writes to the terminal")
    if args.output is not None and Path(args.output).is_dir():  # found now, not after every answer is generated
        raise BadRequest(f"--output {args.output}: a folder; give the answers file's path")
    if args.input is not None:  # "-": the standard input, as other commands read it
        return located_requests("/dev/stdin" if args.input == "-" else args.input)
    return [prompt_request(args.prompt)] if args.prompt is not None else None


def write_answers(chat: Chat, located: list[Located], output: str | None, print_text: bool) -> None:
    """The answers as JSON lines (batch_file) into `output`, all or no file, or to stdout; `print_text` (--prompt
    without --output): the answer's text alone, as the official demo prints it."""
    from glmtune.inference import batch_file

    requests, wheres = [request for _, request in located], [where for where, _ in located]
    if output is None and print_text:
        print(chat.answer([requests[0][1]], wheres)[0])
        return
    if output is None:
        count = batch_file(chat, requests, sys.stdout, wheres)
    else:
        with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out:
            count = batch_file(chat, requests, out, wheres)
    print(f"answered {count} prompt{'' if count == 1 else 's'}", file=sys.stderr)


def bench_eval(args: argparse.Namespace) -> int:
    from glmtune.bench.recipes import bench_eval as run

    batch, cache = args.batch, args.cache
    if args.config:  # the evaluation settings the workflow would run with; --batch / --cache written win
        from glmtune.bench.stage import config_section

        evaluate = config_section("evaluate", args.config)
        batch = evaluate["batch_size"] if batch is None else batch
        cache = evaluate["cache"] if cache is None else cache
    batch, cache = batch or 128, cache or "static"
    print(run(args.model, args.test, args.template, args.samples, args.max_new_tokens, args.demo_batch, batch, cache,
              args.tokenizer, args.demo_samples))
    return 0


def positive_int(text: str) -> int:
    """An option that counts something (tokens, prompts a batch): 1 or more, refused while parsing (exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer (1 or more)")
    return value


def positive_float(text: str) -> float:
    """An option that measures something (GB, TFLOP/s): above 0 and finite, refused while parsing (exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def batch_size_arg(text: str) -> int | str:
    """--batch: a positive integer, or "auto" (sized by free GPU memory)."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a positive integer nor 'auto'")
    return int(text)


def bench_train(args: argparse.Namespace) -> int:
    from glmtune.bench.recipes import bench_samples, bench_tokenizer
    from glmtune.bench.recipes import bench_train as run
    from glmtune.bench.stage import train_recipes

    recipes = train_recipes(args.config, args.recipes.split(","), args.steps, args.logging_steps, args.long_length)
    data = bench_samples(args.train, args.tokenizer, args.template, args.format, args.cutoff_len)
    tokenizer = bench_tokenizer(args.tokenizer, args.template)
    print(run(args.arch, data, tokenizer, recipes, args.steps, args.logging_steps, args.workdir, args.peak_tflops))
    return 0


def bench_export(args: argparse.Namespace) -> int:
    from glmtune.bench.export import bench_export as run

    sizes = {"num_hidden_layers": args.layers, "hidden_size": args.hidden_size,
             "intermediate_size": args.intermediate_size, "num_attention_heads": args.heads}
    print(run(args.arch, args.work, {k: v for k, v in sizes.items() if v}, args.shard_gb, args.dtype))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: infer and the three benchmarks (tests parse the README's commands with it)."""
    parser = argparse.ArgumentParser(prog="glmtune", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("infer", help="answer prompts with a merged model folder or a LoRA adapter folder")
    p.add_argument("model_dir", help="results/merged_model, results/runs/<run>/adapter, or any model folder")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prompt", help="answer one prompt and exit")
    mode.add_argument("--input", help='JSON lines of {"prompt": ...} or {"messages": [...]} to answer in batches ("-": stdin)')
    mode.add_argument("--interactive", action="store_true", help="chat on the terminal (the default without --prompt/--input)")
    p.add_argument("--output", help="where the answers go as JSON lines, each the input row (--prompt: "
                   '{"prompt": ...}) with "response" added, written whole or not at all ("-" or none: stdout)')
    p.add_argument("--base-model", help="base model folder for an adapter whose recorded base has moved; must be the model it was "
                   "trained on (the adapter's base_model.json fingerprint), or inference refuses it")
    p.add_argument("--template", choices=list(FAMILIES), help="chat template (default: detected from the tokenizer)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256,
                   help="tokens an answer may have (the evaluation's are the run's evaluate.max_new_tokens)")
    p.add_argument("--batch-size", type=positive_int, default=16, help="prompts generated together")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run the Python code in the model folder (config.json auto_map); only for folders you trust")
    p.set_defaults(func=infer)

    b = commands.add_parser("bench-eval", help="generation samples/s: the demo's way vs length-sorted batches (a benchmark)")
    b.add_argument("model", help="a model folder, or an architecture config.json (random weights; needs --tokenizer)")
    b.add_argument("test", help="a test split (results/splits/test.jsonl) or any JSON lines of {\"conversations\": [...]}")
    b.add_argument("--tokenizer", help="tokenizer folder (saved, or an official one with tokenizer.model); default: the model's")
    b.add_argument("--template", choices=list(FAMILIES),
                   help=f"chat template (default: detected from the tokenizer, as infer does; {DEFAULT_FAMILY} to rebuild "
                        "an official tokenizer.model)")
    b.add_argument("--samples", type=positive_int, default=1070)
    b.add_argument("--max-new-tokens", type=positive_int, default=74)
    b.add_argument("--demo-batch", type=positive_int, default=16)
    b.add_argument("--demo-samples", type=positive_int, default=None,
                   help="run the demo's way on the first N samples only (default: all)")
    b.add_argument("--batch", type=batch_size_arg, default=None,
                   help="our batch size, or auto (from free GPU memory); default 128, or --config's")
    b.add_argument("--cache", default=None, choices=[*BACKENDS, "auto"],
                   help="a generation backend (evaluate.cache); default static, or --config's")
    b.add_argument("--config", help="take --batch and --cache from this config's evaluate section (layered as the "
                                    "workflow does; a --batch or --cache given wins), e.g. config/advertisegen_glm4.yaml")
    b.set_defaults(func=bench_eval)

    t = commands.add_parser("bench-train", help="the train stage's tokens/s and peak memory per recipe, random weights (a benchmark)")
    t.add_argument("arch", help="a model config.json (original or native), e.g. the GLM-4-9B-chat one; weights are random")
    t.add_argument("train", help="a tokenized train split (results/tokenized/default/train), or a raw data file")
    t.add_argument("--tokenizer", required=True, help="tokenizer folder (saved, or an official one with tokenizer.model)")
    t.add_argument("--config", help="the config whose train section the recipes start from (layered over config/config.yaml "
                                    "as the workflow does), e.g. config/advertisegen_glm4.yaml")
    t.add_argument("--recipes", default="demo,config",
                   help=f"comma-separated, the first is the ratio's base: {', '.join(RECIPES)}")
    t.add_argument("--long-length", type=positive_int, default=2048, help="tokens of the `long` recipe's one sample a step")
    t.add_argument("--logging-steps", type=positive_int, default=5)
    t.add_argument("--workdir", help="where the stage's folders go (default: a new temporary folder)")
    t.add_argument("--format", default="advertisegen", help="the raw file's format (a converter name; default advertisegen)")
    t.add_argument("--template", default=DEFAULT_FAMILY, choices=list(FAMILIES))
    t.add_argument("--cutoff-len", type=positive_int, default=385, help="tokens kept per sample (the demo's 128 + 256 + 1)")
    t.add_argument("--steps", type=positive_int, default=30)
    t.add_argument("--peak-tflops", type=positive_float, default=None, help="the device's dense bf16 peak, for MFU (H100 SXM: 989)")
    t.set_defaults(func=bench_train)

    x = commands.add_parser("bench-export", help="peak RAM of the shard-by-shard export vs the whole-model one (a benchmark)")
    x.add_argument("arch", help="a model config.json (original or native), e.g. the GLM-4-9B-chat one; weights are random")
    x.add_argument("work", help="a new folder for the random model, its adapter and both exports (GBs)")
    x.add_argument("--layers", type=positive_int, help="decoder layers (default: the architecture's)")
    x.add_argument("--hidden-size", type=positive_int)
    x.add_argument("--intermediate-size", type=positive_int)
    x.add_argument("--heads", type=positive_int, help="attention heads")
    x.add_argument("--shard-gb", type=positive_float, default=5.0, help="the base's shards and export.export_size, in GB")
    x.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"], help="export.dtype")
    x.set_defaults(func=bench_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep answers readable on the terminal
    from glmtune.inference import BadRequest
    from glmtune.model.base_identity import BaseModelMismatch
    from glmtune.model.remote_code import RemoteCodeError

    try:
        return args.func(args)
    except (RemoteCodeError, BaseModelMismatch, BadRequest) as exc:  # the user's to fix: say so plainly, no traceback
        print(f"glmtune: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
