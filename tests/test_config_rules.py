"""glmtune.config_rules' learning-rate warmup rules (the method, cache and length rules are tested with their
stages: tests/train/test_methods.py, tests/tokenize/test_splits.py)."""

from __future__ import annotations

import pytest
from helpers.settings import train_settings

from glmtune.config_rules import check_schedule, warmup_steps_of, warmup_warning


def test_a_warmup_the_constant_schedule_would_ignore_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^train.warmup_steps 10 has no effect with train.lr_scheduler: constant"):
        check_schedule(train_settings(lr_scheduler="constant", warmup_steps=10))
    check_schedule(train_settings(lr_scheduler="constant", warmup_steps=0))
    check_schedule(train_settings(lr_scheduler="constant_with_warmup", warmup_steps=10))
    with pytest.raises(ValueError, match=r"^train.warmup_ratio 0.1 has no effect with train.lr_scheduler: constant"):
        check_schedule(train_settings(lr_scheduler="constant", warmup_ratio=0.1))


def test_a_warmup_given_as_steps_and_as_a_ratio_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^train.warmup_steps 10 and train.warmup_ratio 0.1 both set the warmup"):
        check_schedule(train_settings(warmup_steps=10, warmup_ratio=0.1))


@pytest.mark.parametrize(("ratio", "steps", "warmup"), [(0.1, 500, 50), (0.1, 15, 2), (0.03, 1, 1), (0.0, 100, 0)])
def test_a_warmup_ratio_is_that_share_of_the_runs_steps_rounded_up(ratio: float, steps: int, warmup: int) -> None:
    assert warmup_steps_of(train_settings(warmup_ratio=ratio), steps) == warmup
    assert warmup_steps_of(train_settings(warmup_steps=7), steps) == 7


def test_a_warmup_ratio_as_long_as_the_run_is_warned_of_by_its_name() -> None:
    warning = warmup_warning(train_settings(lr_scheduler="linear", warmup_ratio=0.9), 1)
    assert str(warning).startswith("train.warmup_ratio 0.9 (1 steps, rounded up) is not shorter than the run's 1 "
                                   "optimizer steps")


@pytest.mark.parametrize(("scheduler", "warmup", "steps", "warned"), [
    ("cosine", 10, 500, False), ("cosine", 10, 11, False), ("cosine", 10, 10, True), ("linear", 10, 4, True),
    ("constant_with_warmup", 50, 20, True), ("constant", 0, 4, False),
])
def test_a_warmup_as_long_as_the_run_is_warned_of(scheduler: str, warmup: int, steps: int, warned: bool) -> None:
    warning = warmup_warning(train_settings(lr_scheduler=scheduler, warmup_steps=warmup, learning_rate=1e-3), steps)
    assert bool(warning) == warned
    if warned:
        assert f"train.warmup_steps {warmup} is not shorter than the run's {steps} optimizer steps" in str(warning)
        assert f"at most {highest_rate(scheduler, warmup, steps, 1e-3):.3g}" in str(warning)


def highest_rate(scheduler: str, warmup: int, steps: int, learning_rate: float) -> float:
    """The highest learning rate transformers' schedule gives any of the run's optimizer steps."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=learning_rate)
    schedule = get_scheduler(scheduler, optimizer, num_warmup_steps=warmup, num_training_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return max(rates)


def test_a_warmup_over_a_one_step_run_says_nothing_is_trained() -> None:
    warning = warmup_warning(train_settings(lr_scheduler="linear", warmup_steps=1, learning_rate=1e-3), 1)
    assert "(it stays 0: nothing is trained)" in str(warning) and highest_rate("linear", 1, 1, 1e-3) == 0
