"""A training or evaluation process, as torchrun starts one on every rank (see glmtune.launch).

    python -m glmtune.worker train '{"train_dir": ..., "settings": {...}}' [--deepspeed config/deepspeed/ds_zero_2.json]
    python -m glmtune.worker evaluate '{"model_dir": ..., "test_path": ..., ...}'

The JSON object holds the keyword arguments of glmtune.train.trainer.train_model or glmtune.evaluate.predict.evaluate_model,
their settings as plain config sections (glmtune.launch.encode_arguments); --deepspeed replaces the training
settings' `deepspeed` entry.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from glmtune.io import reporting_disk_full
from glmtune.launch import TASKS, decode_arguments, task_function, written_by
from glmtune.lifetime import die_with_parent
from glmtune.logs import job_logging


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # torchrun, the parent, starts workers in their own session: never outlive it
    parser = argparse.ArgumentParser(prog="python -m glmtune.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("arguments", help="JSON object of the task function's keyword arguments")
    parser.add_argument("--deepspeed", help="train: a DeepSpeed JSON config (overrides settings.deepspeed)")
    args = parser.parse_args(argv)
    kwargs = decode_arguments(args.task, args.arguments)

    import torch.distributed as dist

    if args.task == "train" and args.deepspeed:
        kwargs["settings"] = dataclasses.replace(kwargs["settings"], deepspeed=args.deepspeed)
    task = task_function(args.task)
    with job_logging(None), reporting_disk_full(*written_by(kwargs)):  # stderr: the launcher sends it to the log
        try:
            task(**kwargs)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()  # without it, torchrun runs sometimes abort at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
