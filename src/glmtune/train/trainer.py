"""Fine-tune a GLM model (LoRA, P-Tuning v2 or full SFT) through the transformers Trainer.

Checkpoints go to a folder keyed by a fingerprint of the data, settings and process count; it is not a Snakemake
output, so a killed run leaves them and the next run with the same inputs resumes from the newest
verified one (same step, optimizer and RNG state; see glmtune.train.resume). A run whose newest checkpoint is
already at max_steps trains nothing more: it loads that checkpoint and saves the output.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from datasets import load_from_disk
from transformers import Trainer, TrainerState, TrainingArguments, set_seed

from glmtune.config_rules import check_report_to, warmup_steps_of, warmup_warning
from glmtune.deepspeed_file import launch_problem
from glmtune.finite import StopOnNonFinite, TrainingDiverged, first_nonfinite, steps_since
from glmtune.io import read_jsonl, readable_as_others, write_json, write_text
from glmtune.model.base_identity import record_base
from glmtune.train.compat import checkpointing_arg, eval_strategy_arg, sampling_args
from glmtune.model.loading import load_model, load_tokenizer
from glmtune.model.tokenizer_files import save_tokenizer
from glmtune.settings import TrainSettings
from glmtune.train.callbacks import JsonlLogger, StepsFromConfig, eval_args, report_args
from glmtune.train.attention import apply_liger_kernels, set_attention, speed_path
from glmtune.train.collate import PadCollator
from glmtune.train.holder import check_not_superseded, holding_checkpoints
from glmtune.train.loss import HiddenStateLoss, LossTrainer
from glmtune.train.methods import apply_method, uses_four_bit
from glmtune.train.packing import PackedCollator, pack_dataset
from glmtune.train.plots import plot_loss
from glmtune.train.processes import whole_global_batches
from glmtune.train.resume import ManifestWriter, checkpoint_step, last_complete_checkpoint, other_runs_note
from glmtune.train.run_id import checkpoint_folder
from glmtune.train.run_log import trim_log, whole_run_loss

log = logging.getLogger(__name__)
EPOCHS_WARNING = 50  # more passes over the data than this is almost surely a max_steps meant for a larger data set


def batches_per_epoch(settings: TrainSettings, rows: int, world_size: int) -> int:
    """Batches of one pass over `rows` training rows, as the Trainer's loader makes them: global batches of
    world_size x batch_size rows, one batch_size share to each process, the last one partial (topped up with empty
    rows on several processes: glmtune.train.processes.whole_global_batches)."""
    return math.ceil(math.ceil(rows / world_size) / settings.batch_size)


def steps_per_epoch(settings: TrainSettings, rows: int, world_size: int) -> int:
    """Optimizer steps of one pass: its batches, a partial last accumulation a step too. Rows over rows-a-step would
    stop the last pass short."""
    return max(1, math.ceil(batches_per_epoch(settings, rows, world_size) / settings.gradient_accumulation_steps))


def steps_of(settings: TrainSettings, rows: int, world_size: int) -> int:
    """Optimizer steps of the run: train.max_steps when set (it wins), else train.num_epochs whole passes over the
    `rows` training rows (packed rows when packing: the same samples either way, whatever batch_size)."""
    if settings.max_steps is not None:
        return settings.max_steps
    assert settings.num_epochs is not None, "train_read keeps num_epochs when max_steps is null"
    return max(1, math.ceil(settings.num_epochs * steps_per_epoch(settings, rows, world_size)))


def epochs_of(settings: TrainSettings, rows: int, world_size: int) -> float:
    """Passes over the training rows that the run's steps make, as the Trainer's state counts them (a part pass in
    batches: the rest steps' accumulations); warns when they are far too many."""
    steps, per_epoch = steps_of(settings, rows, world_size), steps_per_epoch(settings, rows, world_size)
    batches = batches_per_epoch(settings, rows, world_size)
    whole, rest = divmod(steps, per_epoch)
    epochs = whole + min(rest * settings.gradient_accumulation_steps, batches) / batches
    if epochs > EPOCHS_WARNING:
        log.warning("train.max_steps %d is %.0f epochs over %d training rows (%d steps an epoch): the model will "
                    "memorise them; lower max_steps or add data", steps, epochs, rows, per_epoch)
    return epochs


def precision(setting: str) -> tuple[bool, bool]:
    """The Trainer's (bf16, fp16) flags for train.precision: auto is bf16 where the GPU has it, else fp16 on GPU,
    fp32 on CPU. The weights load in glmtune.model.loading.resolve_dtype(setting) (fp16 keeps fp32 master weights)."""
    if not torch.cuda.is_available():
        if setting in ("bf16", "fp16"):
            log.warning("train.precision %s asked for, but no GPU: training in fp32", setting)
        return False, False
    if setting == "auto":
        setting = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return setting == "bf16", setting == "fp16"


@holding_checkpoints  # one live training per run: a second one refuses to start, naming the first
def train_model(
    train_dir: str | Path, validation_dir: str | Path, model_dir: str | Path, adapter_dir: str | Path,
    log_path: str | Path, plot_path: str | Path, checkpoint_root: str | Path, settings: TrainSettings, *,
    trust_remote_code: bool, run_name: str | None = None, family: str, tokenizer_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train on the tokenized train split; save the adapter (or, for full SFT, the model) with the log and plot.

    `settings` passed glmtune.config_rules.check_method before the run. `trust_remote_code` (model.trust_remote_code)
    runs the model folder's own modeling code; LoRA targets are then the original ChatGLM module names
    (glmtune.train.methods). `run_name` (the workflow's run) names the run in the trackers of train.report_to;
    without it they see the checkpoint folder's id. `family` (model.template) names the LoRA target modules.
    `tokenizer_dir` (default `model_dir`): the folder whose tokenizer is saved with the result, the prepared one,
    whose chat template is the family's, where `model_dir` is the user's own folder it links.
    """
    check_report_to(settings.report_to)  # the job's own environment must have the trackers' packages
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    train_data, validation_data = load_from_disk(str(train_dir)), load_from_disk(str(validation_dir))
    if settings.eval_steps and not len(validation_data):  # the config check saw a layout with validation data
        raise ValueError(f"{validation_dir}: train.eval_steps {settings.eval_steps} asks for a validation loss, but the "
                         "validation split holds no sample (a split.validation_ratio share that rounds to none, or "
                         "every sample dropped by the length limit: logs/tokenize says which); set train.eval_steps: "
                         "null to train without one")
    if settings.packing:
        assert settings.pack_length is not None, "train_read keeps pack_length when packing"
        train_data = pack_dataset(train_data, settings.pack_length)
        validation_data = pack_dataset(validation_data, settings.pack_length)
        log.info("packing: %d rows of up to %d tokens", len(train_data), settings.pack_length)
    max_steps = steps_of(settings, len(train_data), world_size)
    if warning := warmup_warning(settings, max_steps):  # with num_epochs, the steps are known only here
        log.warning(warning)
    checkpoints = checkpoint_folder(checkpoint_root, settings, world_size, train_dir, validation_dir, model_dir)
    run_id = checkpoints.name
    checkpoints.mkdir(parents=True, exist_ok=True)
    steps_log = checkpoints / "log.jsonl"  # kept beside the checkpoints so a resumed run's log is whole
    resume = last_complete_checkpoint(checkpoints)
    resumed_at = checkpoint_step(resume) if resume else 0
    earlier_rows: list[dict[str, Any]] = []  # only rank 0 writes the log and the summary
    if steps_log.exists() and int(os.environ.get("RANK", "0")) == 0:
        trim_log(steps_log, resumed_at, max_steps)
        earlier_rows = list(read_jsonl(steps_log))
    if int(os.environ.get("RANK", "0")) == 0 and (note := other_runs_note(checkpoints)):
        log.warning(note)
    use_gpu = torch.cuda.is_available()
    speed = speed_path(settings)
    bf16, fp16 = precision(settings.precision)
    if settings.deepspeed and (clash := launch_problem(Path(settings.deepspeed), settings, world_size, bf16, fp16)):
        raise ValueError(clash)
    tokenizer = load_tokenizer(tokenizer_dir or model_dir, trust_remote_code=trust_remote_code)
    # The Trainer seeds only when it is built; LoRA / prefix weights are initialised before that, so seed here
    # too, or two runs of the same config train from different adapters.
    set_seed(settings.seed)
    model = load_model(model_dir, dtype=settings.precision, trust_remote_code=trust_remote_code,
                       four_bit=uses_four_bit(settings))
    model = apply_method(model, settings, trust_remote_code, family)
    set_attention(model, speed.attention)
    if speed.liger_kernels:
        apply_liger_kernels(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("%s: %d trainable of %d parameters (%.2f%%)", settings.method, trainable, total, 100 * trainable / total)
    args = TrainingArguments(
        output_dir=str(checkpoints), max_steps=max_steps,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps, learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=warmup_steps_of(settings, max_steps), weight_decay=settings.weight_decay,
        logging_steps=settings.logging_steps, save_steps=settings.save_steps, save_total_limit=2,
        **eval_args(settings.eval_steps, len(validation_data) > 0, eval_strategy_arg()),
        seed=settings.seed, data_seed=settings.seed, bf16=bf16, fp16=fp16, use_cpu=not use_gpu,
        deepspeed=settings.deepspeed, **sampling_args(settings.sampling),
        **{checkpointing_arg(): settings.gradient_checkpointing},
        **report_args(list(settings.report_to), run_name or run_id, Path(checkpoint_root).parent),
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=False,
        logging_nan_inf_filter=False,  # the default logs a NaN step's loss as the mean of the others (or 0.0)
    )
    model.config.use_cache = False  # a training forward needs no KV cache (and packing needs it off)
    collator: Any = (PackedCollator if settings.packing else PadCollator)(tokenizer.pad_token_id, speed.pad_multiple)
    epochs = epochs_of(settings, len(train_data), world_size)
    loss = HiddenStateLoss(model, speed.loss) if speed.loss in ("chunked", "liger") and not settings.deepspeed else None
    log.info("speed path: %s, loss %s", speed, loss.kind if loss else "plain")
    # The earlier jobs' training time counts in the run's (a resumed run's elapsed_s and train_seconds are the run's).
    logger = JsonlLogger(steps_log, collator, earlier_rows)
    earlier = "(the finished run)" if resumed_at >= max_steps else "(before the resume)"  # reused: nothing resumes
    for row in earlier_rows:  # this job's log tells the whole run: the steps before the resume first
        log.info("%s %s", logger.line(row, max_steps, earlier=True), earlier)
    stop = StopOnNonFinite(settings.learning_rate)
    trainer = LossTrainer(
        model=model, args=args, train_dataset=whole_global_batches(train_data, world_size, settings.batch_size),
        eval_dataset=validation_data if len(validation_data) else None, data_collator=collator,
        **({"compute_loss_func": loss} if loss is not None else {}),  # transformers < 4.46 has no such argument
        callbacks=[StepsFromConfig(), logger, stop, ManifestWriter()],
    )
    trained = run_or_reuse(trainer, resume, max_steps)
    reused = bool(resume) and trained[2] == 0  # the finished checkpoint is the result: nothing trained now
    # Not resumed: the Trainer's own mean, as before.
    train_loss = whole_run_loss(earlier_rows, resumed_at, *trained[1:]) if resume else trained[0]
    summary: dict[str, Any] = {"run_id": run_id, "resumed_from": resume, "train_loss": train_loss,
                               "steps": trainer.state.global_step, "epochs": round(epochs, 2),
                               "trainable_parameters": trainable, "reused": reused,
                               "train_seconds": logger.train_seconds}
    bad = first_nonfinite((n, p) for n, p in model.named_parameters() if p.requires_grad)
    if bad:  # a NaN between two logged steps: never save it as the result
        raise TrainingDiverged(f"the trained weight {bad} holds NaN or inf, which appeared "
                               f"{steps_since(trainer.state.global_step, stop.last_finite)}; no adapter was written. "
                               f"Try a lower train.learning_rate (now {settings.learning_rate})")
    if use_gpu:  # the comparison's peak memory (on CPU it takes the job's max RSS from Snakemake's benchmark):
        # the run's, over every job of it (a reused run's job only loads the finished checkpoint)
        earlier_peaks = [row["peak_gpu_memory_gb"] for row in earlier_rows if row.get("peak_gpu_memory_gb") is not None]
        summary["peak_gpu_memory_gb"] = max([round(torch.cuda.max_memory_allocated() / 2**30, 2), *earlier_peaks])
    if trainer.eval_dataset is not None:
        summary["validation_loss"] = final_validation_loss(trainer, trained[2])
    if loss is not None:
        loss.remove()
    model.config.use_cache = True  # saved configs keep fast generation
    check_not_superseded(checkpoint_root)  # a newer job refused meanwhile: its settings may differ from these
    save_output(trainer, tokenizer, Path(adapter_dir), summary, code_from=Path(model_dir) if trust_remote_code else None)
    if trainer.is_world_process_zero():  # one rank logs and writes
        logger.finish(summary)
        write_text(log_path, steps_log.read_text(encoding="utf-8"))
        plot_loss(log_path, plot_path)
        log.info("training done: %s", summary)
    return summary


def run_or_reuse(trainer: Trainer, resume: str | None, max_steps: int) -> tuple[float, float, int]:
    """Train (from `resume` if given); a checkpoint already at max_steps is loaded instead of trained past.

    Returns the Trainer's training_loss, and the sum of the losses of the steps trained here and their number (the
    Trainer's mean is over this call's steps on transformers 5 but over all steps, resumed ones too, on 4.x).
    """
    if resume and checkpoint_step(resume) >= max_steps and trainer.is_deepspeed_enabled:
        # DeepSpeed loads a checkpoint only inside train(), which resumes mid-epoch and trains one step before it
        # checks max_steps; with max_steps steps per epoch, the checkpoint is an epoch's end: it loads, trains none.
        args, data = trainer.args, trainer.train_dataset
        rows = max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        trainer.train_dataset = data.select([i % len(data) for i in range(rows)])
        log.info("%s is the finished run (step %d of %d): its weights are the result, nothing is trained",
                 resume, checkpoint_step(resume), max_steps)
        trainer.train(resume_from_checkpoint=resume)
        return float("nan"), 0.0, 0
    if resume and checkpoint_step(resume) >= max_steps:
        log.info("%s is the finished run (step %d of %d): its weights are the result, nothing is trained",
                 resume, checkpoint_step(resume), max_steps)
        trainer._load_from_checkpoint(resume)  # the Trainer's own loader: adapter or full weights
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        return float("nan"), 0.0, 0
    if resume:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    steps = trainer.state.global_step - (checkpoint_step(resume) if resume else 0)
    return result.training_loss, trainer._total_loss_scalar, steps


def final_validation_loss(trainer: Trainer, steps_trained: int) -> float:
    """The validation loss of the trained weights: the periodic evaluation's when this process just ran one at the
    last step (train.eval_steps dividing max_steps), else one evaluation now."""
    evals = [row for row in trainer.state.log_history if "eval_loss" in row]
    if steps_trained and evals and evals[-1]["step"] == trainer.state.global_step:
        return evals[-1]["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def save_output(trainer: Trainer, tokenizer: Any, out_dir: Path, summary: dict[str, Any],
                code_from: Path | None = None) -> None:
    """Every rank takes part (ZeRO-3 gathers its shards into 16-bit weights); rank 0 writes, then renames into place.

    `code_from`: the remote-code model folder whose *.py files, auto_map and opt-in a full-SFT model keeps.
    """
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    if trainer.is_world_process_zero() and partial.exists():
        shutil.rmtree(partial)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(partial))
    if trainer.is_world_process_zero():
        readable_as_others(partial)
        save_tokenizer(tokenizer, partial)
        record_base(partial)  # an adapter's base_model.json: loads refuse any other base (a whole model: none)
        write_json(partial / "train_summary.json", summary)
        if code_from is not None and (partial / "config.json").is_file():  # a whole model, not an adapter
            from glmtune.model.remote_code import carry_remote_code

            carry_remote_code(code_from, partial)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(partial, out_dir)
    trainer.accelerator.wait_for_everyone()
