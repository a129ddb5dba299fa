"""Training in a process of its own, as torchrun starts it on every rank (see glmtune.launch).

    python -m glmtune.train_entry '{"train_dir": ..., "settings": {...}}' [--deepspeed config/deepspeed/ds_zero_2.json]

The JSON object holds train_lora's keyword arguments; --deepspeed replaces its settings' `deepspeed` entry.
"""

from __future__ import annotations

import argparse
import json
import sys

from .logs import job_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glmtune.train_entry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arguments", help="JSON object of glmtune.training.train_lora's keyword arguments")
    parser.add_argument("--deepspeed", help="a DeepSpeed JSON config (overrides settings.deepspeed)")
    args = parser.parse_args(argv)
    kwargs = json.loads(args.arguments)

    import torch.distributed as dist

    from .training import train_lora

    if args.deepspeed:
        kwargs["settings"] = {**kwargs["settings"], "deepspeed": args.deepspeed}
    with job_logging(None):  # stderr, which the launcher sends to the rule's log file
        try:
            train_lora(**kwargs)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()  # without it, torchrun runs sometimes abort at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
