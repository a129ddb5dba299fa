"""Test hook (on PYTHONPATH only in tests/train/test_processes.py): each training step appends, per rank, the step
the real tokens of every row it trains (a row with a trained label) and every trained label to
$GLMTUNE_TRACE_DIR/rank<R>.jsonl."""

import importlib.abc
import importlib.util
import json
import os
import sys

TRACE_DIR = os.environ.get("GLMTUNE_TRACE_DIR")


def traced(step_function):  # type: ignore[no-untyped-def]
    def training_step(self, model, inputs, *args, **kwargs):  # type: ignore[no-untyped-def]
        ids, labels, mask = inputs["input_ids"], inputs["labels"], inputs.get("attention_mask")
        rows = [ids[i][mask[i].bool()].tolist() if mask is not None else ids[i].tolist()
                for i in range(ids.shape[0]) if (labels[i] != -100).any()]
        with open(os.path.join(TRACE_DIR, f"rank{os.environ.get('RANK', '0')}.jsonl"), "a") as out:
            out.write(json.dumps({"step": self.state.global_step, "rows": rows,
                                  "labels": labels[labels != -100].tolist()}) + "\n")
        return step_function(self, model, inputs, *args, **kwargs)
    return training_step


class WrapLossTrainer(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != "glmtune.train.loss":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            load(module)
            module.LossTrainer.training_step = traced(module.LossTrainer.training_step)
        spec.loader.exec_module = exec_module
        return spec


if TRACE_DIR:
    sys.meta_path.insert(0, WrapLossTrainer())
