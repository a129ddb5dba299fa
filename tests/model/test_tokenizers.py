"""The real GLM-4 / ChatGLM3 tokenizers rebuilt without remote code, checked against the references
the original remote code uses: tiktoken (GLM-4) and sentencepiece (ChatGLM3).

The tests on the real files skip when ../shared/data is absent; the synthetic ones at the end need
only tiktoken / sentencepiece.
"""

from __future__ import annotations

import io
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import shared_data

from glmtune.family import CHATGLM3_SPECIAL_TOKENS, GLM4_PATTERN, GLM4_SPECIAL_TOKENS
from glmtune.model.tokenizers import read_sentencepiece_model
from helpers.official_tokenizers import convert_tokenizer, load_chatglm3_tokenizer, load_glm4_tokenizer

GLM4_DIR = "tokenizers/glm-4-9b-chat"
CHATGLM3_DIR = "tokenizers/chatglm3-6b"

GLM4_IDS = dict(zip(GLM4_SPECIAL_TOKENS, range(151329, 151343)))
CHATGLM3_IDS = dict(zip(CHATGLM3_SPECIAL_TOKENS, range(64789, 64798)))

# Varied text: Chinese, English, digits, runs of spaces, newlines, tabs, CRLF, emoji, full-width
# punctuation, contractions, code, unusual whitespace.
VARIED = [
    "你好",
    "\n",
    "\n\n",
    "\n\n\n",
    "12345",
    "1234567890 3.14159 -42 1,000,000",
    "I'm here, you're there; they've gone, we'll see, he'd know, it's fine, I'd've",
    "DON'T SHOUT, It'S OK",
    "Hello world",
    "  leading and trailing spaces  ",
    "a  b   c    d",
    "tab\tseparated\tvalues\t",
    "windows\r\nline\r\nends\r\n",
    "类型#裙*颜色#红色*风格#简约*图案#条纹",
    "今天天气很好，适合去公园散步。你觉得呢？",
    "这是一个测试😀🎉👍🏽，表情符号👨‍👩‍👧‍👦也要正确处理。",
    "混合 mixed 文本 text with 数字123和English单词",
    "def f(x):\n    return x ** 2  # square\n",
    "{\"key\": [1, 2, 3], \"值\": null}",
    "ｆｕｌｌ－ｗｉｄｔｈ　ｔｅｘｔ　和全角空格",
    "non\u00a0breaking\u2009thin\u200bzero-width",
    "Ünïcödé àccents: café naïve façade",
    "Привет, мир! Γειά σου κόσμε! مرحبا بالعالم",
    "日本語のテキストとカタカナ、한국어 텍스트",
    "<html><body class=\"x\">text</body></html>",
    "    ",
    "end with newline\n",
    "\n starts with newline",
    "philosophy develops sops and eops",  # bare special words stay ordinary text
    "https://example.com/path?query=1&b=2#frag",
]


# --------------------------------------------------------------------------- fixtures


def _timed(label: str, load: Any, folder: Path) -> Any:
    start = time.perf_counter()
    tokenizer = load(folder)
    seconds = time.perf_counter() - start
    print(f"\n{label}: loaded {len(tokenizer)} tokens in {seconds:.2f} s")
    return tokenizer


@pytest.fixture(scope="module")
def glm4() -> Any:
    return _timed("GLM-4", load_glm4_tokenizer, shared_data(GLM4_DIR + "/tokenizer.model").parent)


@pytest.fixture(scope="module")
def chatglm3() -> Any:
    return _timed("ChatGLM3", load_chatglm3_tokenizer, shared_data(CHATGLM3_DIR + "/tokenizer.model").parent)


@pytest.fixture(scope="module")
def tiktoken_ref() -> Any:
    """The encoder the original GLM-4 tokenization_chatglm.py builds."""
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is the GLM-4 reference encoder")
    from tiktoken.load import load_tiktoken_bpe

    path = shared_data(GLM4_DIR + "/tokenizer.model")
    return tiktoken.Encoding(name="glm4", pat_str=GLM4_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(path)),
                             special_tokens=GLM4_IDS)


@pytest.fixture(scope="module")
def sp_ref() -> Any:
    """The processor the original ChatGLM3 SPTokenizer wraps."""
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is the ChatGLM3 reference encoder")
    return spm.SentencePieceProcessor(model_file=str(shared_data(CHATGLM3_DIR + "/tokenizer.model")))


def enc(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def real_texts(limit: int = 400) -> list[str]:
    """Real content: AdvertiseGen rows and emoji-heavy EmoLLM role-play turns."""
    texts: list[str] = []
    with open(shared_data("AdvertiseGen/train.json"), encoding="utf-8") as handle:
        for line, _ in zip(handle, range(limit)):
            row = json.loads(line)
            texts += [row["content"], row["summary"]]
    for record in json.loads(shared_data("EmoLLM/aiwei.json").read_text(encoding="utf-8"))[: limit // 4]:
        for turn in record["conversation"]:
            texts += [value for value in turn.values() if isinstance(value, str)]
    return texts


# --------------------------------------------------------------------------- special tokens


def test_glm4_special_token_ids(glm4: Any) -> None:
    assert len(VARIED) >= 20
    for token, expected in GLM4_IDS.items():
        assert glm4.convert_tokens_to_ids(token) == expected, token
        assert enc(glm4, token) == [expected], token
        assert glm4.convert_ids_to_tokens(expected) == token
    assert glm4.eos_token == "<|endoftext|>" and glm4.eos_token_id == 151329
    assert glm4.pad_token_id == 151329
    assert glm4.padding_side == "left"
    assert len(glm4) == 151343


def test_glm4_special_tokens_are_single_tokens_inside_text(glm4: Any, tiktoken_ref: Any) -> None:
    text = "[gMASK]<sop><|system|>\n你是助手<|user|>\nhello<|assistant|>\n好的<|endoftext|>"
    assert enc(glm4, text) == tiktoken_ref.encode(text, allowed_special="all")
    assert enc(glm4, text)[:3] == [151331, 151333, 151335]
    assert enc(glm4, "a<|observation|>b") == [*tiktoken_ref.encode("a"), 151338, *tiktoken_ref.encode("b")]


def test_chatglm3_special_token_ids(chatglm3: Any) -> None:
    for token, expected in CHATGLM3_IDS.items():
        assert chatglm3.convert_tokens_to_ids(token) == expected, token
        assert chatglm3.convert_ids_to_tokens(expected) == token
    for token in CHATGLM3_SPECIAL_TOKENS:
        if token.startswith(("[", "<")):
            assert enc(chatglm3, token) == [CHATGLM3_IDS[token]], token
    assert chatglm3.eos_token == "</s>" and chatglm3.eos_token_id == 2
    assert chatglm3.pad_token == "<unk>" and chatglm3.pad_token_id == 0
    assert chatglm3.unk_token_id == 0
    assert chatglm3.padding_side == "left"
    assert len(chatglm3) == 64798


def test_chatglm3_special_tokens_are_single_tokens_inside_text(chatglm3: Any, sp_ref: Any) -> None:
    # every text segment between special tokens is encoded on its own, as SentencePiece would
    text = "[gMASK]sop<|system|>\n你是助手<|user|>\nhello<|assistant|>\n好的"
    expected = [64790, 64792, 64794, *sp_ref.encode("\n你是助手"), 64795, *sp_ref.encode("\nhello"),
                64796, *sp_ref.encode("\n好的")]
    assert enc(chatglm3, text) == expected
    assert enc(chatglm3, "eop<|observation|>") == [64793, 64797]
    # the bare words sop/eop are matched as whole words only, never inside another word
    for text in ["philosophy", "develop", "sops", "eopsy", "sopsop"]:
        assert enc(chatglm3, text) == sp_ref.encode(text), text


# --------------------------------------------------------------------------- hand-checked ids


def test_glm4_hand_checked_ids(glm4: Any) -> None:
    assert enc(glm4, "你好") == [109377]
    assert enc(glm4, "\n") == [198]
    assert enc(glm4, "\n\n") == [271]
    assert enc(glm4, "12345") == [108714, 100461]            # "123" | "45": \p{N}{1,3}
    assert glm4.convert_ids_to_tokens([108714, 100461]) == ["123", "45"]
    assert enc(glm4, "I'm here") == [40, 2776, 1588]         # "I" | "'m" | " here"
    assert enc(glm4, " 😀") == [89570]


def test_chatglm3_hand_checked_ids(chatglm3: Any) -> None:
    assert enc(chatglm3, "你好") == [36474, 54591]            # "▁你" "好": the dummy prefix
    assert enc(chatglm3, "\n") == [30910, 13]                # "▁" <0x0A>: byte fallback
    assert enc(chatglm3, "12345") == [30910, 30939, 30943, 30966, 30972, 30970]  # split digits
    assert enc(chatglm3, "Hello world") == [13755, 993]
    assert chatglm3.convert_ids_to_tokens([13755, 993, 30910, 13]) == ["▁Hello", "▁world", "▁", "<0x0A>"]
    assert enc(chatglm3, "") == []


# --------------------------------------------------------------------------- equality with the references


def test_glm4_matches_tiktoken_on_varied_text(glm4: Any, tiktoken_ref: Any) -> None:
    for text in VARIED:
        assert enc(glm4, text) == tiktoken_ref.encode(text), repr(text)


def test_chatglm3_matches_sentencepiece_on_varied_text(chatglm3: Any, sp_ref: Any) -> None:
    for text in VARIED:
        assert enc(chatglm3, text) == sp_ref.encode(text), repr(text)


def _perturbed(texts: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    spaces = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u3000", "\xa0", "\u2028", "\x0b", " \n "]
    out = []
    for text in texts:
        chars = list(text)
        for _ in range(3):
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(spaces))
        out.append("".join(chars))
    return out


def test_both_match_their_references_on_real_data(glm4: Any, chatglm3: Any, tiktoken_ref: Any, sp_ref: Any) -> None:
    texts = real_texts()
    texts += _perturbed(texts[:300], 0)
    assert len(texts) > 1000
    glm4_ids = glm4(texts, add_special_tokens=False)["input_ids"]
    chatglm3_ids = chatglm3(texts, add_special_tokens=False)["input_ids"]
    glm4_bad = [t for t, ids in zip(texts, glm4_ids) if ids != tiktoken_ref.encode(t, disallowed_special=())]
    chatglm3_bad = [t for t, ids in zip(texts, chatglm3_ids)
                    if not re.search(r"\b[se]op\b", t) and ids != sp_ref.encode(t)]
    assert glm4_bad == [] and chatglm3_bad == []


def test_decode_round_trips(glm4: Any, chatglm3: Any) -> None:
    for text in VARIED:
        assert glm4.decode(enc(glm4, text)) == text, repr(text)
        if not text.startswith(" "):  # SentencePiece drops the one leading space its dummy prefix stands for
            assert chatglm3.decode(enc(chatglm3, text)) == text, repr(text)


def test_sentencepiece_proto_reader_agrees_with_protobuf() -> None:
    pytest.importorskip("google.protobuf", reason="protobuf is only the cross-check here")
    spm = pytest.importorskip("sentencepiece")
    from sentencepiece import sentencepiece_model_pb2

    path = shared_data(CHATGLM3_DIR + "/tokenizer.model")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    mine = read_sentencepiece_model(path)
    assert mine.pieces == [(p.piece, p.score, p.type) for p in proto.pieces]
    assert len(mine.pieces) == spm.SentencePieceProcessor(model_file=str(path)).get_piece_size() == 64789
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    assert (mine.model_type, mine.byte_fallback, mine.unk_id) == (spec.model_type, spec.byte_fallback, spec.unk_id) == (2, True, 0)
    assert (mine.add_dummy_prefix, mine.remove_extra_whitespaces, mine.escape_whitespaces, mine.precompiled_charsmap) == (
        norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces, norm.precompiled_charsmap)


# --------------------------------------------------------------------------- save / reload


@pytest.mark.parametrize("family", ["glm4", "chatglm3"])
def test_saved_tokenizer_reloads_with_auto_tokenizer(family: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from transformers import AutoTokenizer

    folder = shared_data((GLM4_DIR if family == "glm4" else CHATGLM3_DIR) + "/tokenizer.model").parent
    original = request.getfixturevalue(family)
    out = convert_tokenizer(folder, family, tmp_path / family)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert "auto_map" not in config  # nothing that needs trust_remote_code
    start = time.perf_counter()
    reloaded = AutoTokenizer.from_pretrained(out)
    print(f"\n{family}: AutoTokenizer.from_pretrained in {time.perf_counter() - start:.2f} s")
    assert reloaded.is_fast and len(reloaded) == len(original)
    assert reloaded.padding_side == "left"
    assert (reloaded.eos_token_id, reloaded.pad_token_id) == (original.eos_token_id, original.pad_token_id)
    assert reloaded.chat_template == original.chat_template
    specials = GLM4_SPECIAL_TOKENS if family == "glm4" else CHATGLM3_SPECIAL_TOKENS
    assert reloaded.convert_tokens_to_ids(list(specials)) == original.convert_tokens_to_ids(list(specials))
    texts = [*VARIED, "[gMASK]sop<|user|>\n你好<|assistant|>", "[gMASK]<sop><|user|>\n你好<|assistant|>"]
    for text in texts:
        assert enc(reloaded, text) == enc(original, text), repr(text)
    batch = reloaded(["你好", "今天天气很好"], padding=True, add_special_tokens=False)
    assert batch["attention_mask"][0][0] == 0  # padded on the left
    assert batch["input_ids"][0][0] == original.pad_token_id


def test_unknown_family_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown tokenizer family"):
        convert_tokenizer(tmp_path, "llama", tmp_path / "out")


def test_missing_model_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_glm4_tokenizer(tmp_path)


# --------------------------------------------------------------------------- synthetic models (no shared data)


def _tiny_ranks(texts: list[str], merges: int) -> dict[bytes, int]:
    """A small byte-level BPE rank table learned from `texts` (most frequent pair first)."""
    ranks = {bytes([b]): b for b in range(256)}
    words = [[bytes([b]) for b in word.encode("utf-8")] for text in texts for word in re.findall(r"\s?\S+|\s+", text)]
    while len(ranks) < 256 + merges:
        counts: dict[tuple[bytes, bytes], int] = {}
        for word in words:
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda pair: (counts[pair], -ranks[pair[0]], -ranks[pair[1]]))
        ranks[best[0] + best[1]] = len(ranks)
        for index, word in enumerate(words):
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            words[index] = merged
    return ranks


def test_glm4_loader_matches_tiktoken_on_a_synthetic_rank_file(tmp_path: Path) -> None:
    tiktoken = pytest.importorskip("tiktoken")
    import base64

    corpus = VARIED * 3 + ["今天天气很好今天天气很好", "the theme of the thesis is there", "1231231234"]
    ranks = _tiny_ranks(corpus, 200)
    (tmp_path / "tokenizer.model").write_text(
        "".join(f"{base64.b64encode(token).decode()} {rank}\n" for token, rank in ranks.items()))
    tokenizer = load_glm4_tokenizer(tmp_path)
    reference = tiktoken.Encoding(name="tiny", pat_str=GLM4_PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == len(ranks)
    assert tokenizer.convert_tokens_to_ids("<|end_of_video|>") == len(ranks) + len(GLM4_SPECIAL_TOKENS) - 1
    for text in [*corpus, "thesis theme", "今天很好"]:
        assert enc(tokenizer, text) == reference.encode(text), repr(text)


def test_chatglm3_loader_matches_sentencepiece_on_a_synthetic_model(tmp_path: Path) -> None:
    spm = pytest.importorskip("sentencepiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(VARIED * 20), model_writer=model, model_type="bpe", vocab_size=700,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, character_coverage=0.98, minloglevel=2,
    )
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    tokenizer = load_chatglm3_tokenizer(tmp_path)
    reference = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    assert tokenizer.convert_tokens_to_ids("[MASK]") == reference.get_piece_size()
    assert tokenizer.convert_tokens_to_ids("<|observation|>") == reference.get_piece_size() + 8
    for text in [*VARIED, "今天天气很好，我们去散步吧", "zzz qqq 字符不在词表 ✨"]:
        assert enc(tokenizer, text) == reference.encode(text), repr(text)
