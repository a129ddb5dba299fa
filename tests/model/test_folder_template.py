"""A model folder's own chat template is checked against the layout training uses: one that renders every probe as
glmtune does is kept; another (the official GLM-4 template, which drops plain function tools; one that trims
contents; none) is replaced in the prepared folder by the family's, with a warning naming the first difference, so
the merged model renders what training saw."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from conftest import shared_data
from glmtune.chat_template import get_template
from glmtune.model.folder_template import PROBES, TEMPLATE_FILE, template_difference
from glmtune.model.prepare import prepare_model_folder
from helpers.model_folders import sharded


def official_glm4_template() -> str:
    config = shared_data("tokenizers/glm-4-9b-chat/tokenizer_config.json")  # skips where ../shared/data is absent
    return json.loads(config.read_text(encoding="utf-8"))["chat_template"]


def tokenizer_with(template: str | None) -> PreTrainedTokenizerFast:
    """A tokenizer whose vocabulary does not matter here (templates are rendered as text) with `template`."""
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
                                        unk_token="[UNK]")
    tokenizer.chat_template = template
    return tokenizer


def test_the_official_glm4_template_drops_plain_function_tools_and_is_a_difference() -> None:
    """The training data stores tools as plain function objects; the official template renders only
    {"type": "function"} ones, so the merged model's apply_chat_template lost the tools of every tool row."""
    official = tokenizer_with(official_glm4_template())
    plain = official.apply_chat_template(PROBES["tool call, plain function"], tokenize=False)
    assert "# 可用工具<|user|>\n北京天气？" in plain and "## get_weather" not in plain  # the official text drops it
    difference = template_difference(official, "glm4")
    assert difference is not None and difference.startswith("the tool call, plain function probe differs at character")
    assert "## get_weather" in difference


def test_a_template_that_trims_contents_is_a_difference() -> None:
    """Training keeps a content's edge whitespace (the official template writes it as given): `| trim` was kept."""
    official = tokenizer_with(official_glm4_template())
    assert official.apply_chat_template(PROBES["edge whitespace"], tokenize=False) == (
        "[gMASK]<sop><|system|>\n 你是一个助手。\n<|user|>\n\n写一首诗 \n<|assistant|>\n  床前明月光\n\n")
    trimmed = official_glm4_template().replace("{{ item['content'] }}", "{{ item['content'] | trim }}")
    assert trimmed != official_glm4_template()
    difference = template_difference(tokenizer_with(trimmed), "glm4")
    assert difference is not None and difference.startswith("the edge whitespace probe differs at character 23: ")


def test_a_template_with_a_default_system_prompt_is_named_with_the_first_difference() -> None:
    baked = official_glm4_template().replace("[gMASK]<sop>", "[gMASK]<sop><|system|>\n你是小智。", 1)
    difference = template_difference(tokenizer_with(baked), "glm4")
    assert difference == ("the one turn probe differs at character 14: its template writes "
                          "'[gMASK]<sop><|system|>\\n你是小智。<|user|>\\n你好<|assistant|>\\n你' where glm4 writes "
                          "'[gMASK]<sop><|user|>\\n你好<|assistant|>\\n你好！'")


def test_no_template_or_one_that_fails_on_a_role_is_a_difference() -> None:
    assert template_difference(tokenizer_with(None), "glm4") == "it has no chat template"
    strict = ("{% for m in messages %}{% if m['role'] not in ['system', 'user', 'assistant'] %}"
              "{{ raise_exception('unknown role ' + m['role']) }}{% endif %}{% endfor %}")
    difference = template_difference(tokenizer_with(strict), "glm4")
    assert difference is not None and difference.startswith("the one turn probe differs at character 0")
    ours_but_strict = "{% for m in messages %}{% if m['role'] == 'observation' %}{{ raise_exception('no tools') }}" \
                      "{% endif %}{% endfor %}" + get_template("glm4").jinja()
    assert template_difference(tokenizer_with(ours_but_strict), "glm4") == \
        "its template fails on the tool call probe (TemplateError: no tools)"


@pytest.mark.parametrize("own", ["glmtune's", "official", "baked"])
def test_a_prepared_folder_keeps_an_agreeing_template_and_gets_the_familys_otherwise(
        tmp_path: Path, own: str, caplog: pytest.LogCaptureFixture) -> None:
    template = {"glmtune's": get_template("glm4").jinja(), "official": official_glm4_template(),
                "baked": official_glm4_template().replace("[gMASK]<sop>", "[gMASK]<sop>你是小智。", 1)}[own]
    folder = sharded(tmp_path / "user model", shards=1)
    (folder / "config.json").write_text(json.dumps({"model_type": "glm"}), encoding="utf-8")  # a native folder
    tokenizer_with(template).save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="glmtune.model.folder_template"):
        prepared = prepare_model_folder("mine", {"source": "path", "template": "glm4"}, folder, tmp_path / "prepared")
    entries = {path.name: path.is_symlink() for path in prepared.iterdir()}
    loaded = AutoTokenizer.from_pretrained(prepared)
    assert loaded.apply_chat_template(PROBES["one turn"], tokenize=False) == "[gMASK]<sop><|user|>\n你好<|assistant|>\n你好！"
    # the plain function tool the training data stores is laid out, as training lays it out
    assert "# 可用工具\n## get_weather\n\n{\n    \"name\": \"get_weather\"" in loaded.apply_chat_template(
        PROBES["tool call, plain function"], tokenize=False)
    if own == "glmtune's":
        assert all(entries.values()) and not caplog.records
    else:
        assert entries.pop(TEMPLATE_FILE) is False and all(entries.values())  # the rest linked as before
        assert (prepared / TEMPLATE_FILE).read_text(encoding="utf-8") == get_template("glm4").jinja()
        assert (folder / TEMPLATE_FILE).read_text(encoding="utf-8") == template  # left as it was
        assert "model 'mine': " in caplog.text and "chat template is not the glm4 layout training uses" in caplog.text
