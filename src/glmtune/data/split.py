"""Merge converted datasets into train / validation / test splits."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Mapping, Sequence
import dataclasses
from pathlib import Path
from typing import Any

from glmtune.data.conversation import conversation_key
from glmtune.data_settings import SplitSettings
from glmtune.io import read_jsonl, write_json, write_jsonl
from glmtune.settings import Section

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
# The order a dataset's files are merged in (one random stream runs through them), whatever order the config names them.
PART_ORDER = ("all", *SPLITS)


@dataclasses.dataclass(frozen=True)
class Part(Section):
    """One converted file: its dataset, the split it was given for ("all" = split by ratio), and the dataset's
    max_samples and sample_ratio; common.smk's converted_parts gives each as a mapping of these keys."""

    SECTION = "parts"

    dataset: str
    split: str
    path: str
    max_samples: int | None
    sample_ratio: float | None  # share of the records to use; above 1 repeats them (oversampling)


def _part_rng(part: Part, seed: int) -> random.Random:
    """A converted file's own generator: which of its records are shuffled out, sampled, repeated or held out
    depends on the seed, its dataset and its file key alone, so adding, editing or dropping another dataset never
    changes it (one stream through all the files did)."""
    return random.Random(f"{seed}:{part.dataset}:{part.split}")


def _split_rng(name: str, seed: int) -> random.Random:
    """The generator that shuffles a merged split, its own for each split."""
    return random.Random(f"{seed}:{name}")


def _sample(rows: list[Any], part: Part, rng: random.Random) -> list[Any]:
    """max_samples caps, sample_ratio scales (whole copies, then a random remainder), as LLaMA-Factory's
    num_samples then max_samples do. The first len(rows) rows returned are distinct (repeats come after)."""
    if part.sample_ratio is not None:
        wanted = round(len(rows) * part.sample_ratio)
        copies, remainder = divmod(wanted, len(rows)) if rows else (0, 0)
        # The repeats last record first: where max_samples keeps only some, they are of the records an `all` file's
        # held-out shares (cut from the front, _cut_all) leave to train; front ones would all be held out, unused.
        rows = (rows if copies else []) + rows[::-1] * max(copies - 1, 0) + rng.sample(rows, remainder)
    return rows[: part.max_samples] if part.max_samples else rows


def _distinct(taken: list[Any], available: int, counts: dict[str, int]) -> list[Any]:
    """A held-out split takes each record once: repeats (sample_ratio above 1) would only weigh some twice in the
    scores, and are counted in the report instead of kept."""
    if len(taken) > available:
        counts["held_out_repeats_not_used"] = len(taken) - available
    return taken[:available]


def held_out_shares(files: Collection[str], validation_ratio: float, test_ratio: float) -> dict[str, float]:
    """The shares of a dataset's `all` file cut out for validation and test: the ratios, except for a split the same
    dataset gives a file of its own for (AdvertiseGen's train.json as `all` and dev.json as `test`). Other datasets'
    files never change them."""
    return {"validation": 0.0 if "validation" in files else validation_ratio,
            "test": 0.0 if "test" in files else test_ratio}


def given_test_only(layouts: Mapping[str, Collection[str]], test_ratio: float, dedupe_across_datasets: bool) -> bool:
    """Whether the test split is the given `test` files alone, given each dataset's file keys: some dataset gives
    one, no `all` file has a test share cut from it, and no cross-dataset dedupe reaches into it. Then it is written
    by its own job (split_test) and no training record changes it; otherwise merge_splits writes it with the rest."""
    if dedupe_across_datasets or not any("test" in files for files in layouts.values()):
        return False
    return not any(held_out_shares(files, 0.0, test_ratio)["test"] > 0 for files in layouts.values() if "all" in files)


def layout_gives(split: str, layouts: Mapping[str, Collection[str]], ratio: float) -> bool:
    """Whether some dataset gives a file for the held-out `split`, or an `all` file has a share (`ratio`) cut for it."""
    return any(split in files or ("all" in files and ratio > 0) for files in layouts.values())


def layout_gives_test(layouts: Mapping[str, Collection[str]], test_ratio: float) -> bool:
    return layout_gives("test", layouts, test_ratio)


def layout_problem(layouts: Mapping[str, Collection[str]], test_ratio: float) -> str | None:
    """What the datasets' file keys alone show to be wrong (None: nothing): with no `train` or `all` file anywhere
    the training split is empty, with no `test` file and no test share of an `all` file the test split is (every
    evaluation, and so results/merged_model, needs it); merge_splits or the evaluation would find either only after
    the conversions, the second one with training under way."""
    keys = "; ".join(f"{name}: {', '.join(sorted(files))}" for name, files in layouts.items())
    if not any({"train", "all"} & set(files) for files in layouts.values()):
        return (f"no dataset gives training data ({keys}): give one a `train` file, or an `all` file to cut by the "
                "split ratios")
    if not layout_gives_test(layouts, test_ratio):
        share = ("set split.test_ratio above 0 to hold out a share of the `all` files"
                 if any("all" in files for files in layouts.values()) else "an `all` file to cut a test share from")
        return (f"no dataset gives test data ({keys}; split.test_ratio {test_ratio}): the evaluation, the report and "
                f"results/merged_model need a test split; give one dataset a `test` file, or {share}")
    return None


def merge_and_split(
    parts: Sequence[Part],
    out_dir: str | Path,
    settings: SplitSettings,
    write_test: bool,
) -> dict[str, Any]:
    """Write out_dir/{train,validation,test}.jsonl and out_dir/report.json.

    Each part is shuffled and sampled with its own generator (_part_rng); parts given for a named split go there
    whole, parts marked "all" are cut by settings' ratios (held_out_shares: a split the same dataset gives a file
    for takes no share of it). With settings.dedupe_across_datasets, a conversation already seen in an earlier part
    is left out (and counted), before splitting, so no test conversation repeats a training one.
    A test split made of given files alone (given_test_only) is then the one given_test_rows makes from those files
    alone; write_test=False leaves it to write_given_test (the split_test job).
    """
    validation_ratio, test_ratio, seed = settings.validation_ratio, settings.test_ratio, settings.seed
    dedupe_across_datasets = settings.dedupe_across_datasets
    layouts: dict[str, set[str]] = {}
    for part in parts:
        layouts.setdefault(part.dataset, set()).add(part.split)
    splits: dict[str, list[Any]] = {name: [] for name in SPLITS}
    report: dict[str, Any] = {"seed": seed, "datasets": {}}
    seen: set[str] = set()
    cut_from_all = 0  # distinct records the `all` files' shares are cut from (after sampling and cross-dataset dedupe)
    for part in parts:
        rows = list(read_jsonl(part.path))
        counts = {"in": len(rows)}
        if dedupe_across_datasets:  # repeats within the file are its dataset's `dedupe` matter, not this one's
            unique = [row for row in rows if conversation_key(row["conversations"]) not in seen]
            counts["cross_dataset_duplicates"] = len(rows) - len(unique)
            rows = unique
        rng = _part_rng(part, seed)
        rng.shuffle(rows)
        taken = _sample(rows, part, rng)
        if rows and not taken:
            log.warning("%s/%s: sample_ratio %s of its %d records rounds to none: the file gives nothing",
                        part.dataset, part.split, part.sample_ratio, len(rows))
        if dedupe_across_datasets:  # what the part gives, not what max_samples / sample_ratio left out of it
            seen.update(conversation_key(row["conversations"]) for row in taken)
        if part.split in ("validation", "test"):
            taken = _distinct(taken, len(rows), counts)
        if part.split != "all":
            splits[part.split].extend(taken)
            counts[part.split] = len(taken)
        else:
            cut_from_all += min(len(taken), len(rows))
            _cut_all(taken, len(rows), held_out_shares(layouts[part.dataset], validation_ratio, test_ratio), splits,
                     counts, f"{part.dataset}/all")
        counts["used"] = sum(counts.get(name, 0) for name in SPLITS)
        if "held_out_repeats_not_used" in counts:
            log.info("%s/%s: %d repeats of held-out records (sample_ratio %s) not used: a held-out split takes each "
                     "record once", part.dataset, part.split, counts["held_out_repeats_not_used"], part.sample_ratio)
        report["datasets"][f"{part.dataset}/{part.split}"] = counts
    if not splits["train"]:
        raise ValueError("the merged training split is empty: check the datasets' files and split ratios")
    if not splits["test"] and layout_gives_test(layouts, test_ratio):  # a share of too few records rounds to none
        raise ValueError(f"the test split is empty: {empty_test_reason(report['datasets'], test_ratio, cut_from_all)}")
    for name, rows in splits.items():
        _split_rng(name, seed).shuffle(rows)
        if name != "test" or write_test:  # else split_test writes the same rows (given_test_rows)
            write_jsonl(Path(out_dir) / f"{name}.jsonl", rows)
    report["sizes"] = {name: len(rows) for name, rows in splits.items()}
    report["held_out_in_train"] = held_out_in_train(splits)
    report["held_out_prompts_in_train"] = held_out_prompts_in_train(splits)
    write_json(Path(out_dir) / "report.json", report)
    log.info("splits: %s", report["sizes"])
    return report


def empty_test_reason(datasets: Mapping[str, Mapping[str, int]], test_ratio: float, cut_from_all: int) -> str:
    """Why no test record is left: the given `test` files gave none (the keys that left them out), and / or the test
    share of the `all` files rounds to none."""
    given = {key: counts["in"] for key, counts in datasets.items() if key.endswith("/test")}
    reasons = [f"the `test` files ({', '.join(given)}) gave none of their {sum(given.values())} records (their "
               "sample_ratio or max_samples, or split.dedupe_across_datasets, left them out)"] if given else []
    read = sum(counts["in"] for key, counts in datasets.items() if key.endswith("/all"))
    if read:
        fewer = f" (of the {read} read: max_samples, sample_ratio or cross-dataset dedupe left these)" \
            if read != cut_from_all else ""
        reasons.append(f"split.test_ratio {test_ratio} of the {cut_from_all} records cut from the `all` "
                       f"files{fewer} rounds to none; raise split.test_ratio")
    return "; ".join(reasons) + "; or give a dataset a `test` file with records"


def _held_out_count(splits: Mapping[str, Sequence[Any]], counted: Callable[[Any], bool], what: str) -> dict[str, int]:
    """The validation and test conversations `counted` holds for, each split's count warned of (`what` they do)."""
    overlap = {name: sum(map(counted, splits[name])) for name in ("validation", "test")}
    for name, count in overlap.items():
        if count:
            log.warning("%d of the %d %s conversations %s", count, len(splits[name]), name, what)
    return overlap


def held_out_in_train(splits: Mapping[str, Sequence[Any]]) -> dict[str, int]:
    """How many validation and test conversations are also training ones (the same messages): scores on them measure
    memory, not generalisation. Counted and warned about, not removed: `split.dedupe_across_datasets` removes them
    where they come from different files, and within one file `dedupe` does."""
    train = {conversation_key(row["conversations"]) for row in splits["train"]}
    return _held_out_count(splits, lambda row: conversation_key(row["conversations"]) in train,
                           "are also in the training split (the same messages): their scores measure memory; "
                           "split.dedupe_across_datasets: true leaves such repeats out")


def _prompt_keys(messages: Sequence[dict[str, Any]], last_only: bool) -> list[str]:
    """The identity of what comes before each trained answer (an assistant message with loss), or only the last
    answer (what the evaluation scores, and generates from what comes before it)."""
    answers = [at for at, msg in enumerate(messages) if msg["role"] == "assistant" and msg.get("loss", True)]
    return [conversation_key(list(messages[:at])) for at in (answers[-1:] if last_only else answers)]


def held_out_prompts_in_train(splits: Mapping[str, Sequence[Any]]) -> dict[str, int]:
    """How many validation and test conversations, not themselves trained, have a prompt (every message before their
    last answer) the model is trained to answer in another conversation: AdvertiseGen repeats 70 of its dev prompts
    with other summaries. Their scores measure memory. Counted and warned about; no dedupe removes them."""
    trained = {key for row in splits["train"] for key in _prompt_keys(row["conversations"], last_only=False)}
    whole = {conversation_key(row["conversations"]) for row in splits["train"]}
    return _held_out_count(
        splits, lambda row: conversation_key(row["conversations"]) not in whole
        and any(key in trained for key in _prompt_keys(row["conversations"], last_only=True)),
        "ask what the training split trains an answer to (the same messages before their last answer, in another "
        "conversation): their scores measure memory")


def _cut_all(taken: list[Any], available: int, shares: Mapping[str, float], splits: dict[str, list[Any]],
             counts: dict[str, int], label: str) -> None:
    """Cut an `all` part: the held-out shares from its distinct records (the first `available` of `taken`), the
    rest to train with every repeat of a record left there. Cutting the repeated list instead would put copies of a
    test conversation into train (sample_ratio 2: every one of them)."""
    distinct = taken[:available]
    start = 0
    held_out: set[int] = set()
    for name, ratio in shares.items():
        size = round(len(distinct) * ratio)
        if ratio and distinct and not size:
            log.warning("%s: split.%s_ratio %s of its %d records rounds to none: it gives the %s split nothing",
                        label, name, ratio, len(distinct), name)
        rows = distinct[start : start + size]
        splits[name].extend(rows)
        held_out.update(id(row) for row in rows)
        counts[name] = size
        start += size
    train = distinct[start:] + [row for row in taken[available:] if id(row) not in held_out]
    splits["train"].extend(train)
    counts["train"] = len(train)
    if len(taken) - start > len(train):
        counts["held_out_repeats_not_used"] = len(taken) - start - len(train)


def given_test_rows(parts: Sequence[Part], seed: int) -> list[Any]:
    """The test split from the parts given for it, each shuffled and sampled with its own generator and the whole
    with the test split's, exactly as merge_and_split makes it: editing a training record leaves it byte for byte
    the same (and the base model's evaluation cached)."""
    rows: list[Any] = []
    for part in parts:
        if part.split == "test":
            taken = list(read_jsonl(part.path))
            rng = _part_rng(part, seed)
            rng.shuffle(taken)
            rows.extend(_sample(taken, part, rng)[: len(taken)])  # once each, as merge_and_split's _distinct
    _split_rng("test", seed).shuffle(rows)
    return rows


def write_given_test(parts: Sequence[Part], path: str | Path, seed: int) -> int:
    """Write the test split of the parts given for it (the split_test rule); return its size."""
    count = write_jsonl(path, given_test_rows(parts, seed))
    log.info("test split: %d conversations", count)
    return count
