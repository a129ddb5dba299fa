"""Every converter on the real public files in ../shared/data (skipped when a clone has none).

Each file goes through convert_file with on_invalid: skip; every record must end up converted or
rejected with a reason, the counts are the ones known for the file (duplicates are exact repeats
in the raw file), and one record per file is checked against its raw text by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data

from glmtune.data.convert import convert_file
from glmtune.data.formats import dataset_info_file, from_dataset_info
from glmtune.io import read_jsonl
from helpers.settings import convert_settings


def S(content: str, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"role": "system", "content": content, "loss": False, **({"tools": tools} if tools else {})}


def U(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content, "loss": False}


def A(content: str, metadata: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "loss": True, **({"metadata": metadata} if metadata else {})}


def O(content: str) -> dict[str, Any]:  # noqa: E743
    return {"role": "observation", "content": content, "loss": False}


def convert(tmp_path: Path, raw: Path, fmt: str, **options: Any) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Convert with on_invalid: skip; return the report, conversations by source index, and rejects."""
    out, rejects_path = tmp_path / "conv.jsonl", tmp_path / "rejects.jsonl"
    report = convert_file(raw, out, rejects_path, tmp_path / "report.json", fmt, "real", convert_settings(**{**options, "on_invalid": "skip"}))
    rows = list(read_jsonl(out))
    rejects = list(read_jsonl(rejects_path))
    assert report["records_in"] == report["records_out"] + report["rejected"]
    assert (len(rows), len(rejects)) == (report["records_out"], report["rejected"])
    assert all(reject["reason"] and reject["where"] for reject in rejects)
    for row in rows:  # every kept conversation trains on something
        assert any(m["role"] == "assistant" and m["loss"] for m in row["conversations"])
    return report, {row["source"]["index"]: row["conversations"] for row in rows}, rejects


DUPLICATE = "exact duplicate of an earlier conversation"

ADGEN_DEV_LINE_1 = [
    U("类型#上衣*材质#牛仔布*颜色#白色*风格#简约*图案#刺绣*衣样式#外套*衣款式#破洞"),
    A("简约而不简单的牛仔外套，白色的衣身十分百搭。衣身多处有做旧破洞设计，打破单调乏味，增加一丝造型看点。"
      "衣身后背处有趣味刺绣装饰，丰富层次感，彰显别样时尚。"),
]


# --- AdvertiseGen ---------------------------------------------------------------------------------

def test_advertisegen_train(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("AdvertiseGen/train.json"), "advertisegen")
    assert (report["records_in"], report["records_out"], rejects) == (5000, 5000, [])
    assert rows["line 1"] == [
        U("类型#裤*版型#宽松*风格#性感*图案#线条*裤型#阔腿裤"),
        A("宽松的阔腿裤这两年真的吸粉不少，明星时尚达人的心头爱。毕竟好穿时尚，谁都能穿出腿长2米的效果宽松的裤腿，"
          "当然是遮肉小能手啊。上身随性自然不拘束，面料亲肤舒适贴身体验感棒棒哒。系带部分增加设计看点，还让单品的设计感更强。"
          "腿部线条若隐若现的，性感撩人。颜色敲温柔的，与裤子本身所呈现的风格有点反差萌。"),
    ]


def test_advertisegen_gbk_crlf_gives_the_same_conversations(tmp_path: Path) -> None:
    _, utf8, _ = convert(tmp_path / "utf8", shared_data("AdvertiseGen/train.json"), "advertisegen")
    report, gbk, rejects = convert(tmp_path / "gbk", shared_data("AdvertiseGen/train.gbk_crlf.json"), "advertisegen", encoding="gbk")
    assert (report["records_in"], report["records_out"], rejects) == (5000, 5000, [])
    assert gbk == utf8
    assert not any("\r" in m["content"] for conversation in gbk.values() for m in conversation)


@pytest.mark.parametrize(("relative", "fmt"), [
    ("AdvertiseGen/dev.json", "advertisegen"),
    ("AdvertiseGen/dev.glm4_messages.jsonl", "glm4"),
    ("chatglm3/AdvertiseGen_fix_dev.json", "chatglm3"),
])
def test_advertisegen_dev_in_three_formats(tmp_path: Path, relative: str, fmt: str) -> None:
    report, rows, rejects = convert(tmp_path, shared_data(relative), fmt)
    assert (report["records_in"], report["records_out"], report["duplicates"]) == (1070, 1069, 1)
    assert [(r["where"], r["reason"]) for r in rejects] == [("line 890", DUPLICATE)]
    assert rows["line 1"] == ADGEN_DEV_LINE_1


def test_advertisegen_dev_formats_agree(tmp_path: Path) -> None:
    _, plain, _ = convert(tmp_path / "a", shared_data("AdvertiseGen/dev.json"), "advertisegen")
    _, glm4, _ = convert(tmp_path / "b", shared_data("AdvertiseGen/dev.glm4_messages.jsonl"), "glm4")
    _, chatglm3, _ = convert(tmp_path / "c", shared_data("chatglm3/AdvertiseGen_fix_dev.json"), "chatglm3")
    assert plain == glm4 == chatglm3


# --- ChatGLM3 self-cognition ---------------------------------------------------------------------------

def test_chatglm3_cognition_train_without_final_newline(tmp_path: Path) -> None:
    raw = shared_data("chatglm3/cognition_train.json")
    assert not raw.read_bytes().endswith(b"\n")
    report, rows, rejects = convert(tmp_path, raw, "chatglm3")
    assert (report["records_in"], report["records_out"], rejects) == (71, 71, [])
    assert rows["line 1"] == [U("你好"), A("您好，我是 大熊喵 Raginhart 开发的 AI 助手，很高兴认识您。请问我能为您做些什么？")]
    assert rows["line 71"] == [U("你是chatglm吗？"), A("抱歉，我不是 chatglm，我是 Raginhart 开发的 大熊喵，旨在为用户提供智能化的回答和帮助。")]


def test_chatglm3_cognition_dev_repeats(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("chatglm3/cognition_dev.json"), "chatglm3")
    assert (report["records_in"], report["records_out"], report["duplicates"], report["rejected"]) == (60, 10, 50, 50)
    assert {r["reason"] for r in rejects} == {DUPLICATE}
    assert rows["line 1"] == [U("你好"), A("您好，我是 大熊喵，一个由 Raginhart 打造的人工智能助手，请问有什么可以帮助您的吗？")]


# --- EmoLLM -----------------------------------------------------------------------------------------

def test_emollm_data(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("EmoLLM/data.json"), "emollm")
    assert (report["records_in"], report["records_out"], rejects) == (1596, 1596, [])
    assert all(c[0]["role"] == "system" and 2 <= len(c) // 2 <= 5 for c in rows.values())
    assert rows["record 1343"] == [
        S("现在你是一个心理专家，我有一些心理问题，请你用专业的知识帮我解决。"),
        U("医生，我感觉自己的生活一团糟。我弟弟最近因为我的疏忽出了严重的意外，我总是觉得是我害了他，这份内疚感压得我喘不过气来。"),
        A("我非常理解你现在的心情，感到内疚是人在经历类似事件后的正常心理反应，你首先需要知道的是，我们都尽力做到最好，"
          "但生活中难免会有意外发生。这不是你的错，你没有必要过度自责。请试着回忆一下当时的具体情况，详细地告诉我，让我们一起分析，好吗？"),
        U("那天我只是让他在公园等我，但我迟到了很久，他为了找我就跑到了马路上..."),
        A("谢谢你对我坦诚这些细节。从你的描述来看，你并没有预见到他会因此跑到马路上，你的迟到并不是直接导致意外的原因。"
          "责任应当归咎于未能确保道路安全的其他因素。你现在可以尝试将对弟弟的爱转化为积极的力量，比如参与一些关于道路安全的公益活动，"
          "提醒他人避免类似的悲剧。同时，也可以考虑进行心理咨询以处理和缓解这份内疚情绪，我们会通过专业的方法帮助你接受并逐渐放下这件事，"
          "你觉得这样的建议如何呢？"),
    ]


def test_emollm_aiwei(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("EmoLLM/aiwei.json"), "emollm")
    assert (report["records_in"], report["records_out"], rejects) == (1600, 1600, [])
    assert rows["record 1034"] == [
        S("现在你是一个拥有丰富心理学知识的温柔御姐艾薇医生，我有一些心理问题，请你用专业的知识和温柔的口吻帮我解决。"),
        U("（眼眶微红）我最近总是在想过去的事情，那些无忧无虑的日子。感觉现在的生活压力好大，一切都变了，我有点无法适应..."),
        A("（轻轻微笑）😊 我完全理解你的感受，每个人都有怀旧的时候，尤其是在面对生活变化时。回忆过去是一种正常的应对机制，"
          "它帮助我们寻找内心的力量与安慰。但是，如果这种情绪持续影响到现在的生活，那就需要我们一起来探讨一下了。"
          "你可以试着详细描述一下你怀念的具体是什么，以及现在的生活中哪些方面让你感到压力特别大呢？我们可以从这里找到突破口，逐步调整和适应。"),
    ]


def test_emollm_tiangou_first_record_has_no_system(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("EmoLLM/tiangou.json"), "emollm")
    assert (report["records_in"], report["records_out"], rejects) == (1301, 1301, [])
    assert rows["record 0"] == [U("请介绍一下你自己"), A("我是一个拥有丰富心理学知识的舔狗艾仁医生，可以帮助你解决心理上的问题哦")]
    assert sum(c[0]["role"] != "system" for c in rows.values()) == 1
    assert sum(len(c) == 3 for c in rows.values()) == 50 - 1  # single-turn: system + user + assistant, besides record 0


# --- alpaca -----------------------------------------------------------------------------------------

def test_alpaca_emollm_self_cognition(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("EmoLLM/self_cognition_EmoLLM.json"), "alpaca")
    assert (report["records_in"], report["records_out"], report["duplicates"]) == (85, 84, 1)
    assert [(r["where"], r["reason"]) for r in rejects] == [("record 6", DUPLICATE)]
    assert rows["record 0"] == [U("你好"), A("您好，我是EmoLLM，一个由EmoLLM团队开发的心理咨询师，很高兴认识您。请问我能为您做些什么？")]
    assert all(len(c) == 2 for c in rows.values())  # empty inputs: the prompt is the instruction alone


def test_alpaca_zh_demo(tmp_path: Path) -> None:
    report, rows, rejects = convert(tmp_path, shared_data("llamafactory/alpaca_zh_demo.json"), "alpaca")
    assert (report["records_in"], report["records_out"], report["duplicates"]) == (1000, 992, 8)
    assert [r["where"] for r in rejects] == [f"record {i}" for i in (516, 597, 611, 779, 781, 879, 907, 996)]
    assert {r["reason"] for r in rejects} == {DUPLICATE}
    assert rows["record 664"] == [U("将以下罗马数字转换为阿拉伯数字。\n输入：XIV"), A("输出：14")]


def test_alpaca_identity_via_dataset_info(tmp_path: Path) -> None:
    info = shared_data("llamafactory/dataset_info.json")
    fmt, options = from_dataset_info(info, "identity")
    assert fmt == "alpaca"
    report, rows, rejects = convert(tmp_path, dataset_info_file(info, "identity"), fmt, **options)
    assert (report["records_in"], report["records_out"], rejects) == (91, 91, [])
    assert rows["record 0"] == [U("hi"), A("Hello! I am {{name}}, an AI assistant developed by {{author}}. How can I assist you today?")]


def test_alpaca_zh_demo_via_dataset_info_matches_plain_alpaca(tmp_path: Path) -> None:
    info = shared_data("llamafactory/dataset_info.json")
    fmt, options = from_dataset_info(info, "alpaca_zh_demo")
    _, via_info, _ = convert(tmp_path / "a", dataset_info_file(info, "alpaca_zh_demo"), fmt, **options)
    _, plain, _ = convert(tmp_path / "b", shared_data("llamafactory/alpaca_zh_demo.json"), "alpaca")
    assert via_info == plain


# --- sharegpt (glaive tool calls) ---------------------------------------------------------------------

def test_sharegpt_glaive_toolcall_via_dataset_info(tmp_path: Path) -> None:
    info = shared_data("llamafactory/dataset_info.json")
    fmt, options = from_dataset_info(info, "glaive_toolcall_zh_demo")
    raw = dataset_info_file(info, "glaive_toolcall_zh_demo")
    assert (fmt, raw) == ("sharegpt", info.parent / "glaive_toolcall_zh_demo.json")
    report, rows, rejects = convert(tmp_path, raw, fmt, **options)
    invalid = [(r["where"], r["reason"]) for r in rejects if r["reason"] != DUPLICATE]
    assert invalid == [("record 197", "message 2: observation without a preceding function_call"),
                       ("record 293", "message 2: observation without a preceding function_call")]
    assert (report["records_in"], report["records_out"], report["duplicates"], report["steps"]["invalid"]) == (300, 255, 43, 2)

    tools = [{"name": "get_random_fact", "description": "获取一个随机的有趣事实",
              "parameters": {"type": "object", "properties": {}, "required": []}}]
    assert rows["record 90"] == [
        S("", tools),  # tools stay structured, as the raw JSON string decodes
        U("我无聊了。你能告诉我一些有趣的事情吗？"),
        A("{}", metadata="get_random_fact"),
        O('{"fact": "你知道章鱼有三个心脏吗？"}'),
        A("你知道吗，章鱼有三颗心脏？相当有趣，不是吗？"),
    ]
    assert rows["record 0"][2] == A('{"customer_name": "约翰·多伊", "items": [{"name": "苹果", "quantity": 2, "price": 1}, '
                                    '{"name": "香蕉", "quantity": 3, "price": 0.5}]}', metadata="generate_invoice")
    # "[]" tools (100 rows): no system message
    assert rows["record 176"][0] == U(json.loads(raw.read_text(encoding="utf-8"))[176]["conversations"][0]["value"])
    assert sum(c[0]["role"] != "system" for c in rows.values()) + sum(
        1 for r in rejects if r["record"]["tools"] == "[]") == 100
    raw_rows = json.loads(raw.read_text(encoding="utf-8"))
    for index, conversation in rows.items():  # every tools string arrives as its decoded list, on the system message
        assert conversation[0].get("tools", []) == json.loads(raw_rows[int(index.split()[1])]["tools"])
    calls = [m for c in rows.values() for m in c if m.get("metadata")]
    assert calls and all(m["role"] == "assistant" and m["loss"] and json.loads(m["content"]) is not None for m in calls)


def test_every_real_dataset_info_entry_maps_or_says_why() -> None:
    info = shared_data("llamafactory/dataset_info.json")
    names = json.loads(info.read_text(encoding="utf-8"))
    supported = {}
    for name in names:
        try:
            supported[name] = from_dataset_info(info, name)[0]
        except ValueError as err:
            assert str(err).startswith(f"{info}: dataset {name!r}")
    assert supported == {"identity": "alpaca", "alpaca_en_demo": "alpaca", "alpaca_zh_demo": "alpaca",
                         "glaive_toolcall_en_demo": "sharegpt", "glaive_toolcall_zh_demo": "sharegpt"}
