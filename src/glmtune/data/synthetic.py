"""A synthetic, offline AdvertiseGen-style dataset for the embedded default job.

Each record is ``{"content": "类型#裙*颜色#红色*...", "summary": "..."}`` like the real AdvertiseGen.
The summary is a deterministic composition of per-value phrases (a learnable function of the
attributes), so a tiny model fine-tuned on it shows a clear ROUGE-L gain on a held-out split.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path

# Attribute keys in the fixed order they appear in `content` (and in the summary).
KEY_ORDER = ["类型", "版型", "材质", "颜色", "风格", "图案", "裙长", "裤长", "衣长", "袖长", "领型"]

# Type → (opening words, closing clause, keys that fit this type besides 类型).
_COMMON = ["版型", "材质", "颜色", "风格", "图案"]
TYPES: dict[str, tuple[str, str, list[str]]] = {
    "裙": ("这款半身裙设计别致", "穿出温柔的女人味", _COMMON + ["裙长"]),
    "连衣裙": ("这款连衣裙气质出众", "尽显温柔的女人味", _COMMON + ["裙长", "袖长", "领型"]),
    "裤": ("这款裤子时尚百搭", "让你轻松穿出好身材", _COMMON + ["裤长"]),
    "上衣": ("这款上衣简单耐看", "日常穿搭舒适又时髦", _COMMON + ["衣长", "袖长", "领型"]),
    "外套": ("这款外套质感出众", "秋冬穿着保暖又有型", _COMMON + ["衣长", "袖长", "领型"]),
    "衬衫": ("这件衬衫清爽大方", "通勤约会都很合适", _COMMON + ["衣长", "袖长", "领型"]),
}

# Key → word that introduces its phrase in the summary ("" = none).
LEAD_INS = {"版型": "", "材质": "采用", "颜色": "搭配", "风格": "", "图案": "加上",
            "裙长": "", "裤长": "", "衣长": "", "袖长": "", "领型": ""}

# Key → value → phrase; every summary contains the phrase of each of its attributes.
PHRASES: dict[str, dict[str, str]] = {
    "版型": {"宽松": "宽松的版型不挑身材", "修身": "修身的剪裁勾勒曲线", "直筒": "直筒版型利落大方",
           "收腰": "收腰设计显瘦", "落肩": "落肩设计慵懒随性"},
    "材质": {"棉": "柔软的棉质面料", "雪纺": "轻盈的雪纺面料", "牛仔": "耐穿的牛仔面料",
           "针织": "舒适的针织面料", "蕾丝": "精致的蕾丝材质", "羊毛": "温暖的羊毛材质"},
    "颜色": {"红色": "热情的红色", "白色": "干净的白色", "黑色": "经典的黑色", "蓝色": "清爽的蓝色",
           "粉色": "甜美的粉色", "绿色": "清新的绿色", "黄色": "明亮的黄色", "灰色": "低调的灰色"},
    "风格": {"复古": "复古的设计透出优雅气质", "简约": "简约的风格干净利落", "甜美": "甜美的风格减龄可爱",
           "休闲": "休闲的风格随性自在", "通勤": "通勤风格干练知性", "街头": "街头风格个性十足",
           "文艺": "文艺的气息清新脱俗"},
    "图案": {"格子": "经典的格子图案", "条纹": "显瘦的条纹图案", "碎花": "浪漫的碎花图案",
           "刺绣": "精美的刺绣点缀", "印花": "个性的印花图案", "纯色": "百搭的纯色设计"},
    "裙长": {"短裙": "短款裙摆显高", "中长裙": "中长款裙摆优雅", "长裙": "长款裙摆飘逸"},
    "裤长": {"九分裤": "九分的长度露出脚踝", "短裤": "短裤长度清凉", "长裤": "长裤修饰腿型"},
    "衣长": {"短款": "短款衣长提升腰线", "常规款": "常规衣长百搭实穿", "中长款": "中长款遮住臀部"},
    "袖长": {"长袖": "长袖设计保暖", "短袖": "短袖清爽透气", "七分袖": "七分袖露出手腕", "无袖": "无袖设计凉爽"},
    "领型": {"圆领": "圆领修饰脸型", "V领": "V领拉长颈部线条", "翻领": "翻领干练大方",
           "立领": "立领显气质", "娃娃领": "娃娃领俏皮减龄"},
}


def make_record(rng: random.Random) -> dict[str, str]:
    """Draw one record: a type plus 2-5 other attributes that fit it, in KEY_ORDER."""
    kind = rng.choice(list(TYPES))
    opening, closing, keys = TYPES[kind]
    chosen = rng.sample(keys, rng.randint(2, min(5, len(keys))))
    attrs = [("类型", kind)] + [(key, rng.choice(list(PHRASES[key]))) for key in KEY_ORDER if key in chosen]
    content = "*".join(f"{key}#{value}" for key, value in attrs)
    clauses = [opening] + [LEAD_INS[key] + PHRASES[key][value] for key, value in attrs[1:]] + [closing]
    return {"content": content, "summary": "，".join(clauses) + "。"}


def generate(rows: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[dict[str, str]]:
    """`rows` records, identical for the same (rows, seed, exclude); none whose content is in `exclude` (the same
    attributes make the same summary, so such a record would repeat one of those)."""
    rng = random.Random(seed)
    records: list[dict[str, str]] = []
    for _ in range(rows * 100):  # the attribute space holds tens of thousands of records: never near this bound
        if len(records) == rows:
            return records
        record = make_record(rng)
        if record["content"] not in exclude:
            records.append(record)
    raise ValueError(f"could not draw {rows} synthetic records outside the {len(exclude)} excluded ones")


def _write_atomic(path: Path, records: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            for record in records:
                row = {"content": record["content"], "summary": record["summary"]}
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


FILE_NAMES = {"train": "train.json", "dev": "dev.json"}  # what a `demo` dataset's `files` may name


def write_advertisegen(out_dir: str | Path, train_rows: int, dev_rows: int, seed: int) -> dict[str, Path]:
    """Write out_dir/train.json and out_dir/dev.json (AdvertiseGen's raw JSON-lines format)."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / file for name, file in FILE_NAMES.items()}
    # Distinct seed streams: dev draws from a different generator than train, and never a training record, so the
    # default job's test conversations are unseen (19 of 299 repeated a training one before).
    train = generate(train_rows, seed * 2)
    _write_atomic(paths["train"], train)
    _write_atomic(paths["dev"], generate(dev_rows, seed * 2 + 1, exclude=frozenset(r["content"] for r in train)))
    return paths
