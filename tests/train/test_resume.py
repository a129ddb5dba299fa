"""A corrupt checkpoint is never resumed from, a diverged run never writes an adapter, a finished run never trains on."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TRAIN_SETTINGS
from helpers.settings import train_settings
from safetensors.torch import load_file, save_file

from glmtune.finite import TrainingDiverged
from glmtune.io import read_jsonl
from glmtune.train.trainer import train_model

SETTINGS = {**TRAIN_SETTINGS, "max_steps": 10, "save_steps": 5, "logging_steps": 5}


def _train(small_run: dict[str, Path], out: Path, settings: dict = SETTINGS, model: Path | None = None) -> dict:
    tokenized = small_run["tokenized"]
    return train_model(tokenized / "train", tokenized / "validation", model or small_run["model"], out / "adapter",
                      out / "log.jsonl", out / "loss.png", out / "ckpt", train_settings(**settings),
                      trust_remote_code=False, family="glm4")


@pytest.fixture(scope="module")
def finished(small_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A finished 10-step run: checkpoints 5 and 10, the adapter, the summary."""
    out = tmp_path_factory.mktemp("finished")
    return out, _train(small_run, out)


def _copy(finished: tuple[Path, dict], to: Path) -> Path:
    """The finished run's checkpoints, without its adapter: the next call runs the training stage again."""
    shutil.copytree(finished[0] / "ckpt", to / "ckpt")
    return next(p for p in (to / "ckpt").iterdir() if p.is_dir())  # not holder.lock


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 64, len(data) - 32):  # tensor data (the header is at the start)
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "flipped adapter bytes": ("adapter_model.safetensors", _flip_bytes),
    "truncated adapter": ("adapter_model.safetensors", _cut),
    "emptied optimizer": ("optimizer.pt", lambda path: path.write_bytes(b"")),
    "cut trainer state": ("trainer_state.json", _cut),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_is_named_and_the_previous_one_resumed(
    corruption: str, finished: tuple[Path, dict], small_run: dict[str, Path], tmp_path: Path, caplog
) -> None:
    name, corrupt = CORRUPTIONS[corruption]
    run = _copy(finished, tmp_path)
    corrupt(run / "checkpoint-10" / name)
    with caplog.at_level("WARNING", logger="glmtune.train.resume"):
        summary = _train(small_run, tmp_path)
    assert f"checkpoint checkpoint-10 is not used: {run / 'checkpoint-10' / name}" in caplog.text
    assert summary["resumed_from"] == str(run / "checkpoint-5") and summary["steps"] == 10
    adapter = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    reference = load_file(finished[0] / "adapter" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in adapter.values())
    assert all(torch.allclose(adapter[k], reference[k], atol=1e-5) for k in reference)  # the same run, completed again
    assert abs(summary["validation_loss"] - finished[1]["validation_loss"]) < 1e-4
    assert [row["step"] for row in read_jsonl(tmp_path / "log.jsonl") if "loss" in row] == [5, 10]


def test_with_every_checkpoint_corrupt_the_run_starts_over_and_says_so(
    finished: tuple[Path, dict], small_run: dict[str, Path], tmp_path: Path, caplog
) -> None:
    run = _copy(finished, tmp_path)
    for step in (5, 10):
        _flip_bytes(run / f"checkpoint-{step}" / "adapter_model.safetensors")
    with caplog.at_level("WARNING", logger="glmtune.train.resume"):
        summary = _train(small_run, tmp_path)
    assert "training starts from step 0" in caplog.text and summary["resumed_from"] is None
    assert summary["steps"] == 10 and summary["train_loss"] == finished[1]["train_loss"]


def test_nan_weights_in_a_checkpoint_are_refused_even_with_a_matching_manifest(
    finished: tuple[Path, dict], small_run: dict[str, Path], tmp_path: Path, caplog
) -> None:
    from glmtune.train.resume import write_manifest

    run = _copy(finished, tmp_path)
    path = run / "checkpoint-10" / "adapter_model.safetensors"
    weights = load_file(path)
    next(iter(weights.values()))[0, 0] = float("nan")
    save_file(weights, str(path))
    write_manifest(run / "checkpoint-10")  # a checkpoint saved from an already diverged model
    with caplog.at_level("WARNING", logger="glmtune.train.resume"):
        summary = _train(small_run, tmp_path)
    assert "holds NaN or inf" in caplog.text and summary["resumed_from"] == str(run / "checkpoint-5")


def test_a_finished_run_run_again_trains_nothing_and_gives_the_same_result(
    finished: tuple[Path, dict], small_run: dict[str, Path], tmp_path: Path
) -> None:
    run = _copy(finished, tmp_path)
    summary = _train(small_run, tmp_path)
    assert summary["resumed_from"] == str(run / "checkpoint-10") and summary["steps"] == 10
    assert summary["train_loss"] == pytest.approx(finished[1]["train_loss"], rel=1e-6)
    assert summary["validation_loss"] == pytest.approx(finished[1]["validation_loss"], rel=1e-6)
    rows = list(read_jsonl(tmp_path / "log.jsonl"))
    assert max(row["step"] for row in rows) == 10 and [r["step"] for r in rows if "loss" in r] == [5, 10]
    assert sum("eval_loss" in row for row in rows) == 1  # the validation row is not repeated
    again, first = (load_file(d / "adapter" / "adapter_model.safetensors") for d in (tmp_path, finished[0]))
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_a_nan_loss_stops_training_with_the_step_and_no_adapter(small_run: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(small_run["model"], model)
    weights = load_file(model / "model.safetensors")
    key = next(k for k in weights if k.endswith("embed_tokens.weight"))
    weights[key][:] = float("nan")
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(TrainingDiverged, match=r"training diverged at step 1 \(loss nan.*no adapter was written.*learning_rate"):
        _train(small_run, tmp_path, {**SETTINGS, "logging_steps": 1, "save_steps": 1}, model=model)
    assert not (tmp_path / "adapter").exists() and not list((tmp_path / "ckpt").glob("*/checkpoint-*"))


def test_a_nan_validation_loss_stops_training_and_writes_no_adapter(small_run: dict[str, Path], tmp_path: Path) -> None:
    """A validation sample with no trained token (its loss is 0 / 0) stands for a forward that overflows: the
    weights are finite, the training loss too, and the table would show a NaN validation loss."""
    from datasets import load_from_disk

    tokenized = small_run["tokenized"]
    # keep_in_memory: no cache file beside the shared fixture's data (its files are in every run id)
    untrained = load_from_disk(str(tokenized / "validation")).map(lambda row: {"labels": [-100] * len(row["labels"])},
                                                                   keep_in_memory=True)
    untrained.save_to_disk(str(tmp_path / "validation"))
    with pytest.raises(TrainingDiverged, match=r"the validation loss at step 5 is nan, with the training loss finite "
                                               r"at step 5: .* no adapter was written. Try train.precision bf16 or fp32"):
        train_model(tokenized / "train", tmp_path / "validation", small_run["model"], tmp_path / "adapter",
                    tmp_path / "log.jsonl", tmp_path / "loss.png", tmp_path / "ckpt",
                    train_settings(**{**SETTINGS, "eval_steps": 5}), trust_remote_code=False, family="glm4")
    assert not (tmp_path / "adapter").exists()


def test_a_live_training_holds_its_checkpoint_folder_until_it_ends(small_run: dict[str, Path], tmp_path: Path) -> None:
    """A second training of the same run refuses to start while the first lives, naming it; a SIGKILLed holder
    leaves no stale lock."""
    import signal
    import subprocess
    import sys

    from glmtune.train.holder import CheckpointFolderHeld, hold

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from glmtune.train.holder import hold\n"
         f"with hold({str(tmp_path / 'ckpt')!r}): print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "SLURM_JOB_ID": "4242"})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CheckpointFolderHeld, match=rf"pid {holder.pid} on .*SLURM job 4242 \(scancel 4242"):
            _train(small_run, tmp_path)
        assert not (tmp_path / "adapter").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with hold(tmp_path / "ckpt"):  # the kernel released the killed holder's lock
        pass


def test_a_slurm_job_submitted_before_the_last_holder_is_left_over_and_writes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pending when its Snakemake was killed, a job started after the newer run's job had held the folder and ended:
    the lock was free, nothing was marked, and it wrote its outputs over the newer run's (a real SLURM, SIGKILL)."""
    from glmtune.train.holder import LeftOver, hold

    folder = tmp_path / "ckpt"
    monkeypatch.setenv("SLURM_JOB_ID", "20")
    with hold(folder):
        (folder / "checkpoint-10").mkdir()  # it trained (a job that left nothing leaves no lock file either)
    monkeypatch.setenv("SLURM_JOB_ID", "19")  # submitted before 20, started after it
    with pytest.raises(LeftOver, match=r"held by a training submitted after this one \(pid \d+ on .*SLURM job 20 "
                                       r".*left over from an earlier Snakemake"):
        with hold(folder):
            pytest.fail("a left-over job ran")
    for job, cluster in (("20", ""), ("21", ""), ("3", "other")):  # requeued (its own id); a later job; another cluster
        monkeypatch.setenv("SLURM_JOB_ID", job)
        monkeypatch.setenv("SLURM_CLUSTER_NAME", cluster)
        with hold(folder):
            pass
    monkeypatch.delenv("SLURM_JOB_ID")
    with hold(folder):  # not a SLURM job: nothing to compare
        pass


def _refused_elsewhere(folder: Path) -> str:
    """Another process asks for `folder` while this one holds it (a newer job of a re-run): its refusal."""
    import subprocess
    import sys

    asked = subprocess.run(
        [sys.executable, "-c", "from glmtune.train.holder import hold\n"
         f"with hold({str(folder)!r}): pass"], capture_output=True, text=True, env={**os.environ, "SLURM_JOB_ID": "77"})
    assert asked.returncode != 0
    return asked.stderr


def test_a_training_asked_for_again_while_it_ran_writes_no_outputs_and_leaves_its_checkpoints(
        small_run: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Left running by a Snakemake killed alone (a SLURM job goes on without it), a training whose run was asked for
    again meanwhile (refused by its lock) must not write the adapter: Snakemake would take it for the newer job's,
    whose settings may differ. Its finished checkpoint stays, and the next training reuses it."""
    from glmtune.train import trainer
    from glmtune.train.holder import Superseded

    original = trainer.run_or_reuse

    def trained_then_asked_again(*args: object) -> tuple[float, float, int]:
        result = original(*args)
        assert "is held by a training that is still running" in _refused_elsewhere(tmp_path / "ckpt")
        return result

    monkeypatch.setattr(trainer, "run_or_reuse", trained_then_asked_again)
    with pytest.raises(Superseded, match=r"a newer job for .*ckpt \(pid \d+ on .*SLURM job 77.*\) was refused while this "
                                         r"one ran.*its outputs are not written"):
        _train(small_run, tmp_path)
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "log.jsonl").exists()
    monkeypatch.setattr(trainer, "run_or_reuse", original)
    summary = _train(small_run, tmp_path)  # the refusal is older than this job's lock: it writes
    assert summary["reused"] and (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_resumed_runs_figures_tell_the_whole_run(
    finished: tuple[Path, dict], small_run: dict[str, Path], tmp_path: Path, caplog
) -> None:
    """Wall time over every job, the last log row equal to the summary, the steps before the resume in this job's
    log, one "training done"."""
    run = _copy(finished, tmp_path)
    shutil.rmtree(run / "checkpoint-10")  # killed between checkpoints 5 and 10
    before = {row["step"]: row for row in read_jsonl(run / "log.jsonl") if "loss" in row}
    with caplog.at_level("INFO", logger="glmtune"):
        summary = _train(small_run, tmp_path)
    assert summary["resumed_from"] == str(run / "checkpoint-5") and not summary["reused"]
    rows = list(read_jsonl(tmp_path / "log.jsonl"))
    assert rows[-1] == {"step": 10, **{k: summary[k] for k in ("train_loss", "validation_loss", "train_seconds",
                                                                 "reused", "resumed_from")}}
    assert rows[-1]["train_loss"] == pytest.approx(finished[1]["train_loss"], rel=1e-4)  # the whole run's mean
    # The steps of the earlier job count: the run's time is more than the earlier job's up to its checkpoint.
    loss_rows = [row for row in rows if "loss" in row]
    assert loss_rows[0]["elapsed_s"] == before[5]["elapsed_s"] < loss_rows[1]["elapsed_s"] <= summary["train_seconds"]
    assert f"step 5/10 | loss {before[5]['loss']:.4f}" in caplog.text and "(before the resume)" in caplog.text
    assert caplog.text.count("training done") == 1


def test_a_run_resumed_from_a_checkpoint_between_log_rows_logs_as_an_uninterrupted_one(
    small_run: dict[str, Path], tmp_path: Path
) -> None:
    """save_steps 5, logging_steps 3: the checkpoint's step had no row, so the resumed run's first row averaged only
    its own steps and the steps before the checkpoint dropped out of train_loss (h14). A checkpoint step is logged."""
    settings = {**SETTINGS, "logging_steps": 3}
    whole = _train(small_run, tmp_path / "whole", settings)
    shutil.copytree(tmp_path / "whole" / "ckpt", tmp_path / "cut" / "ckpt")
    run = next(p for p in (tmp_path / "cut" / "ckpt").iterdir() if p.is_dir())
    shutil.rmtree(run / "checkpoint-10")  # killed between checkpoints 5 and 10
    resumed = _train(small_run, tmp_path / "cut", settings)
    assert resumed["resumed_from"] == str(run / "checkpoint-5")

    def losses(log: Path) -> dict[int, float]:
        return {row["step"]: row["loss"] for row in read_jsonl(log) if "loss" in row}

    expected = losses(tmp_path / "whole" / "log.jsonl")
    assert sorted(expected) == [3, 5, 6, 9, 10]
    assert losses(tmp_path / "cut" / "log.jsonl") == pytest.approx(expected, rel=1e-4)
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-4)


def test_a_run_reused_from_its_finished_checkpoint_says_so_with_the_runs_own_time(
    finished: tuple[Path, dict], small_run: dict[str, Path], tmp_path: Path
) -> None:
    _copy(finished, tmp_path)
    summary = _train(small_run, tmp_path)
    assert summary["reused"] and summary["train_seconds"] == finished[1]["train_seconds"] > 0
    from glmtune.evaluate.compare import COLUMNS, training_record

    (tmp_path / "train.tsv").write_text("s\th:m:s\tmax_rss\n18.2\t0:00:18\t900\n")
    record = training_record(tmp_path / "log.jsonl", tmp_path / "adapter/train_summary.json", tmp_path / "train.tsv")
    assert record["train_wall_s"] == finished[1]["train_seconds"]
    assert COLUMNS["training wall time"](record).endswith(" (reused)")


def test_a_nan_between_two_checks_names_the_steps_it_may_have_appeared_at() -> None:
    from types import SimpleNamespace

    from glmtune.finite import StopOnNonFinite

    stop, args = StopOnNonFinite(1e-3), SimpleNamespace(fp16=False)
    stop.on_train_begin(args, SimpleNamespace(global_step=0), None)
    stop.on_log(args, SimpleNamespace(global_step=5), None, {"loss": 2.0, "grad_norm": 1.0})
    with pytest.raises(TrainingDiverged, match=r"between steps 6 and 10 \(finite at step 5"):
        stop.on_log(args, SimpleNamespace(global_step=10), None, {"loss": float("nan"), "grad_norm": 1.0})
