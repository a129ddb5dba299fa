"""A model folder's own chat template is checked against the layout training uses: the official GLM-4 template
renders every probe as glmtune does and is kept; another template (or none) is replaced in the prepared folder by
the family's, with a warning naming the first difference, so the merged model renders what training saw."""

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


def test_the_official_glm4_template_renders_every_probe_as_the_glm4_layout() -> None:
    assert template_difference(tokenizer_with(official_glm4_template()), "glm4") is None
    assert {"one turn", "system prompt", "several turns", "tool call"} == set(PROBES)


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


@pytest.mark.parametrize("own", ["official", "baked"])
def test_a_prepared_folder_keeps_an_agreeing_template_and_gets_the_familys_otherwise(
        tmp_path: Path, own: str, caplog: pytest.LogCaptureFixture) -> None:
    template = official_glm4_template()
    folder = sharded(tmp_path / "user model", shards=1)
    (folder / "config.json").write_text(json.dumps({"model_type": "glm"}), encoding="utf-8")  # a native folder
    tokenizer_with(template if own == "official" else template.replace("[gMASK]<sop>", "[gMASK]<sop>你是小智。", 1)
                   ).save_pretrained(folder)
    with caplog.at_level(logging.WARNING, logger="glmtune.model.folder_template"):
        prepared = prepare_model_folder("mine", {"source": "path", "template": "glm4"}, folder, tmp_path / "prepared")
    entries = {path.name: path.is_symlink() for path in prepared.iterdir()}
    rendered = AutoTokenizer.from_pretrained(prepared).apply_chat_template(PROBES["one turn"], tokenize=False)
    if own == "official":
        assert all(entries.values()) and not caplog.records
        assert rendered == "[gMASK]<sop><|user|>\n你好<|assistant|>\n你好！"
    else:
        assert entries.pop(TEMPLATE_FILE) is False and all(entries.values())  # the rest linked as before
        assert (prepared / TEMPLATE_FILE).read_text(encoding="utf-8") == get_template("glm4").jinja()
        assert rendered == "[gMASK]<sop><|user|>\n你好<|assistant|>\n你好！"
        assert (folder / TEMPLATE_FILE).read_text(encoding="utf-8").startswith("[gMASK]<sop>你是小智。")  # left as it was
        assert "model 'mine': " in caplog.text and "chat template is not the glm4 layout training uses" in caplog.text
