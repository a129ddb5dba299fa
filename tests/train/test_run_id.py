"""glmtune.train.run_id: a checkpoint folder's name follows what is trained, on what data, by how many processes."""

from __future__ import annotations

from pathlib import Path

from conftest import TRAIN_SETTINGS
from helpers.settings import train_settings

from glmtune.train import run_id
from glmtune.train.run_id import run_id_of


def test_run_id_follows_settings_and_file_contents_and_reads_big_files_only_at_the_ends(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_id, "WHOLE_FILE_LIMIT", 4 << 20)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    big = folder / "model.safetensors"
    big.write_bytes(bytes(6 << 20))
    base = run_id.fingerprint({"lr": 1}, folder)
    assert run_id.fingerprint({"lr": 2}, folder) != base
    (folder / "config.json").write_text('{"a": 2}')
    assert run_id.fingerprint({"lr": 1}, folder) != base
    (folder / "config.json").write_text('{"a": 1}')
    assert run_id.fingerprint({"lr": 1}, folder) == base
    data = bytearray(big.read_bytes())
    data[-1] = 1  # the tail of a big file counts
    big.write_bytes(bytes(data))
    assert run_id.fingerprint({"lr": 1}, folder) != base
    data[-1], data[3 << 20] = 0, 1  # its middle does not: that is what keeps an 18 GB model from being read
    big.write_bytes(bytes(data))
    assert run_id.fingerprint({"lr": 1}, folder) == base


def test_run_id_follows_the_validation_data_and_the_process_count(small_run: dict[str, Path]) -> None:
    """A validation edit or another GPU count is not the finished run: resuming it would train nothing new."""
    tokenized = small_run["tokenized"]
    same = (tokenized / "train", tokenized / "validation", small_run["model"])
    settings = train_settings(**TRAIN_SETTINGS)
    base = run_id_of(settings, 1, *same)
    assert run_id_of(settings, 1, *same) == base
    assert run_id_of(settings, 2, *same) != base
    assert run_id_of(settings, 1, tokenized / "train", tokenized / "train", small_run["model"]) != base


def test_a_setting_added_later_keeps_the_ids_of_runs_from_before_it_until_set(small_run: dict[str, Path]) -> None:
    """A key added to train (warmup_ratio) must not rename every existing checkpoint folder: at the value that trains
    as before it is left out of the hash. The earlier name is the one the versions before this one gave a run:
    every train setting but eval_steps and report_to, with the world size."""
    tokenized = small_run["tokenized"]
    folders = (tokenized / "train", tokenized / "validation", small_run["model"])
    settings = train_settings(**TRAIN_SETTINGS)
    as_before = {key: value for key, value in settings.to_config().items()
                 if key not in ("eval_steps", "report_to", *run_id.LATER_KEYS)}
    assert run_id_of(settings, 1, *folders, earlier=True) == run_id.fingerprint({**as_before, "world_size": 1}, *folders)
    ratio = train_settings(**{**TRAIN_SETTINGS, "warmup_ratio": 0.1})
    assert run_id_of(ratio, 1, *folders) != run_id_of(settings, 1, *folders)


def test_how_often_a_run_logs_and_saves_keeps_its_id(small_run: dict[str, Path]) -> None:
    """Changing logging_steps or save_steps before re-running a killed run resumes it instead of starting afresh."""
    tokenized = small_run["tokenized"]
    folders = (tokenized / "train", tokenized / "validation", small_run["model"])
    settings = train_settings(**TRAIN_SETTINGS)
    other = train_settings(**{**TRAIN_SETTINGS, "logging_steps": 7, "save_steps": 3})
    assert run_id_of(other, 1, *folders) == run_id_of(settings, 1, *folders)
    assert run_id_of(other, 1, *folders, earlier=True) != run_id_of(settings, 1, *folders, earlier=True)


def test_a_num_epochs_run_is_named_anew_since_its_steps_are_counted_as_the_trainers(small_run: dict[str, Path]) -> None:
    """num_epochs' steps were counted short of whole passes: such a run's checkpoints had a shorter schedule and are
    not resumed (a finished one would have trained one step more on another schedule's tail). max_steps runs keep
    their names."""
    tokenized = small_run["tokenized"]
    folders = (tokenized / "train", tokenized / "validation", small_run["model"])
    epochs = train_settings(**{**TRAIN_SETTINGS, "max_steps": None, "num_epochs": 2})
    as_before = {key: value for key, value in epochs.to_config().items()
                 if key not in (*run_id.OBSERVING_KEYS, *run_id.LATER_KEYS)}
    assert run_id_of(epochs, 1, *folders) != run_id.fingerprint({**as_before, "world_size": 1}, *folders)
    steps = train_settings(**TRAIN_SETTINGS)
    as_before = {key: value for key, value in steps.to_config().items() if key not in (*run_id.OBSERVING_KEYS, *run_id.LATER_KEYS)}
    assert run_id_of(steps, 1, *folders) == run_id.fingerprint({**as_before, "world_size": 1}, *folders)
