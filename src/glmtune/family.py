"""The model families glmtune knows, each described in one place (pure data: no torch, no transformers).

A family entry holds everything that differs between GLM generations: the chat layout (prefix, role tokens, eos,
the tokens that end generation, how a system message with tools is laid out), the special tokens the tokenizer
adds with their official ids, the eos / pad / unk tokens, which `tokenizer.model` reader builds its tokenizer, how
an original (remote-code) checkpoint's config.json is recognised, the stop ids a converted checkpoint's generation
config gains, the transformers architecture its checkpoints load as, and the LoRA module names of the native and the
remote-code layouts. The chat template (glmtune.chat_template), the tokenizers (glmtune.model.tokenizers), the tiny
and the random benchmark models (glmtune.model.tiny, glmtune.bench.models), checkpoint conversion
(glmtune.model.convert_original), LoRA targets (glmtune.config_rules: `train.lora.target_modules` is checked against
the family's names, not a schema enum) and the CLI's choices all read it from here. A new family is one more `Family`
in FAMILIES (and its name in the schema's `model.template` enum, which tests/test_family.py checks against
FAMILIES); tests/test_family.py registers a ChatML-like family of another architecture in one entry and runs it
through every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# The chat-template's role token of a role that a family does not name otherwise.
ROLE_FORMAT = "<|{role}|>"


@dataclass(frozen=True, kw_only=True)
class ChatLayout:
    """A family's chat template as data; glmtune.chat_template.ChatTemplate adds the encoding and the Jinja."""

    prefix: tuple[str, ...]
    eos: str
    stop: tuple[str, ...]  # tokens that end generation
    tools_layout: str  # a key of glmtune.chat_template.TOOLS_LAYOUTS: how a system message with tools is laid out
    role_tokens: tuple[tuple[str, str], ...] = ()  # (role, token) for roles whose token is not ROLE_FORMAT's
    # What the rendered text puts after a header so that tokenizing it whole gives the ids of encoding
    # header and content apart. SentencePiece (ChatGLM3) prefixes every text segment with '▁': the
    # official ChatGLM3 chat template writes "\n " for that reason.
    jinja_header_end: str = "\n"
    # GLM-4's chat template writes nothing for a message with empty content (`{% if item['content'] %}`).
    drop_empty: bool = False
    # GLM-4's demo tokenizes each rendered message whole (apply_chat_template), so "\n" + a content that starts
    # with whitespace merges; ChatGLM3's build_single_message encodes header and content apart.
    encode_whole: bool = False
    # The token that closes every message (ChatML's <|im_end|>), trained with an assistant message; None: the next
    # role token (or eos) ends a message, as in GLM-4 and ChatGLM3.
    end_of_turn: str | None = None

    def role_token(self, role: str) -> str:
        return dict(self.role_tokens).get(role, ROLE_FORMAT.format(role=role))


@dataclass(frozen=True)
class ModuleNames:
    """LoRA target names: transformers' native layout, and the original remote-code one."""

    native: tuple[str, ...]  # the linear layers of the native model (`all` means these)
    original: Mapping[str, tuple[str, ...]]  # the original names the official demos' configs use -> native names
    remote: tuple[str, ...]  # the linear layers of the original code, trained as they are with trust_remote_code


@dataclass(frozen=True)
class Architecture:
    """The transformers architecture a family's checkpoints load as: what its tiny and random benchmark models are."""

    model_type: str  # transformers' model_type (AutoConfig.for_model), e.g. "glm"
    # config keys the family's models set beyond the sizes (glmtune.model.tiny gives those)
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class OriginalMatch:
    """How an original (remote-code) config.json of the family is recognised;
    recognise_original tries every family's names first, then every family's sizes, then the hints."""

    names: tuple[str, ...] = ()  # substrings of the lower-cased `_name_or_path`
    sizes: tuple[tuple[str, int], ...] = ()  # (key, value) pairs only this family's configs have
    hint: Callable[[Mapping[str, Any]], bool] | None = None  # a weaker sign, for configs with neither


@dataclass(frozen=True, kw_only=True)
class Family:
    """One model family: everything the stages need to know about it, by name of a FAMILIES key."""

    name: str
    title: str  # as people write it, for messages
    chat: ChatLayout
    # The tokens the tokenizer adds after its base vocabulary, in official id order from first_special_id.
    special_tokens: tuple[str, ...]
    first_special_id: int | None  # official id of special_tokens[0] (the base vocabulary's size); None: no official one
    media_tokens: tuple[str, ...] = ()  # special tokens a chat never writes (a tiny model leaves them out)
    bare_words: tuple[str, ...] = ()  # special tokens without brackets: matched only as whole words
    pad: str
    unk: str | None = None
    tokenizer: str | None  # reader of the official tokenizer.model in glmtune.model.tokenizers.BUILDERS; None: none
    split_pattern: str | None = None  # the tiktoken pre-tokenizer regex
    # Stop tokens that a converted checkpoint's generation config gains (those its official config leaves out).
    generation_stops: tuple[str, ...] = ()
    original: OriginalMatch | None = None  # None: no original checkpoints to convert
    architecture: Architecture
    modules: ModuleNames

    def __post_init__(self) -> None:
        known = {*self.special_tokens, self.chat.eos, self.pad, *([self.unk] if self.unk else [])}
        used = {*self.chat.prefix, *self.chat.stop, *([self.chat.end_of_turn] if self.chat.end_of_turn else []), *(token for _, token in self.chat.role_tokens), *self.generation_stops}
        if not used <= known:
            raise ValueError(f"family {self.name}: the chat layout uses {sorted(used - known)}, which are not among "
                             "its special tokens, eos, pad or unk")
        if self.chat.end_of_turn and self.chat.end_of_turn not in self.chat.stop:
            raise ValueError(f"family {self.name}: generation must stop at the end-of-turn token "
                             f"{self.chat.end_of_turn}: add it to the chat layout's stop tokens")
        if not set(self.media_tokens) <= set(self.special_tokens):
            raise ValueError(f"family {self.name}: media_tokens must be among its special_tokens")

    def special_id(self, token: str) -> int:
        """The official id of one of the family's special tokens."""
        if self.first_special_id is None:
            raise ValueError(f"family {self.name} has no official special token ids")
        return self.first_special_id + self.special_tokens.index(token)

    def generation_stop_ids(self) -> tuple[int, ...]:
        return tuple(self.special_id(token) for token in self.generation_stops)

    def chat_special_tokens(self) -> list[str]:
        """eos, pad, unk and the special tokens a chat writes, each once: what a tiny model's tokenizer carries."""
        tokens = [self.chat.eos, self.pad, *([self.unk] if self.unk else []),
                  *(token for token in self.special_tokens if token not in self.media_tokens)]
        return list(dict.fromkeys(tokens))


# Both generations keep the original ChatGLMModel code's module names, and convert to transformers' Glm.
_GLM_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")
CHATGLM_MODULES = ModuleNames(
    native=_GLM_LINEAR,
    original=MappingProxyType({
        "query_key_value": ("q_proj", "k_proj", "v_proj"),
        "dense": ("o_proj",),
        "dense_h_to_4h": ("gate_up_proj",),
        "dense_4h_to_h": ("down_proj",),
    }),
    remote=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
)
# transformers' Glm, which both generations convert to (their q/k/v projections have biases).
GLM_ARCHITECTURE = Architecture("glm", MappingProxyType({"attention_bias": True}))

# GLM-4's pre-tokenizer pattern (tokenization_chatglm.py of glm-4-9b-chat).
GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GLM-4's chat tokens, then its media markers, in id order from 151329 (the number of tiktoken ranks).
GLM4_CHAT_TOKENS = (
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
)
GLM4_MEDIA_TOKENS = ("<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>")
GLM4_SPECIAL_TOKENS = GLM4_CHAT_TOKENS + GLM4_MEDIA_TOKENS
# In id order from 64789 (the SentencePiece vocabulary size); eos </s> and unk <unk> are SentencePiece's own pieces.
CHATGLM3_SPECIAL_TOKENS = (
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
)


def _glm4_hint(config: Mapping[str, Any]) -> bool:
    return isinstance(config.get("eos_token_id"), list) or "rope_ratio" in config


GLM4 = Family(
    name="glm4",
    title="GLM-4",
    chat=ChatLayout(prefix=("[gMASK]", "<sop>"), eos="<|endoftext|>", stop=("<|endoftext|>", "<|user|>", "<|observation|>"),
                    tools_layout="glm4", drop_empty=True, encode_whole=True),
    special_tokens=GLM4_SPECIAL_TOKENS,
    first_special_id=151329,
    media_tokens=GLM4_MEDIA_TOKENS,
    pad="<|endoftext|>",
    tokenizer="tiktoken",
    split_pattern=GLM4_PATTERN,
    generation_stops=(),  # glm-4-9b-chat's own configs already list every stop token
    original=OriginalMatch(names=("glm-4", "glm4"), sizes=(("padded_vocab_size", 151552), ("seq_length", 131072)),
                           hint=_glm4_hint),
    architecture=GLM_ARCHITECTURE,
    modules=CHATGLM_MODULES,
)

CHATGLM3 = Family(
    name="chatglm3",
    title="ChatGLM3",
    chat=ChatLayout(prefix=("[gMASK]", "sop"), eos="</s>", stop=("</s>", "<|user|>", "<|observation|>"),
                    tools_layout="chatglm3", jinja_header_end="\n "),
    special_tokens=CHATGLM3_SPECIAL_TOKENS,
    first_special_id=64789,
    # Bare words: matched only as a whole word, so that "philosophy" or "develop" stay ordinary text,
    # while "[gMASK]sop<|user|>" (the chat template's text) still yields the `sop` token.
    bare_words=("sop", "eop"),
    pad="<unk>",
    unk="<unk>",
    tokenizer="sentencepiece",
    # ChatGLM3's chat() also stops at <|user|> and <|observation|>; its config lists only </s> (2).
    generation_stops=("<|user|>", "<|observation|>"),
    original=OriginalMatch(names=("chatglm3",), sizes=(("padded_vocab_size", 65024),)),
    architecture=GLM_ARCHITECTURE,
    modules=CHATGLM_MODULES,
)

# In the order original configs are matched (and the CLI lists them).
FAMILIES: dict[str, Family] = {family.name: family for family in (GLM4, CHATGLM3)}
DEFAULT_FAMILY = "glm4"


def get_family(name: str, what: str = "model family") -> Family:
    """The registered family `name`; `what` says in the error what the name was given as (e.g. "chat template")."""
    if name not in FAMILIES:
        raise KeyError(f"unknown {what} {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def template_hint(has_token: Callable[[str], bool]) -> str:
    """What a message about a tokenizer of another family says to do: the families whose chat prefix it has
    (`has_token`), or that none fits."""
    fitting = [name for name, family in FAMILIES.items() if all(has_token(token) for token in family.chat.prefix)]
    return f"set model.template: {' or '.join(fitting)}" if fitting else "no registered family's template fits it"


def recognise_original(config: Mapping[str, Any]) -> str | None:
    """The family of an original (remote-code) config.json, or None when no family's signs match."""
    originals = [(family.name, family.original) for family in FAMILIES.values() if family.original is not None]
    name = str(config.get("_name_or_path", "")).lower()
    for family, match in originals:
        if any(part in name for part in match.names):
            return family
    for family, match in originals:
        if any(config.get(key) == value for key, value in match.sizes):
            return family
    for family, match in originals:
        if match.hint is not None and match.hint(config):
            return family
    return None


ORIGINAL_MODEL_TYPE = "chatglm"  # the model_type of every original (remote-code) ChatGLM3 / GLM-4 config.json


def native_model_types() -> list[str]:
    """The model_types the families' checkpoints load natively as (transformers' `glm`)."""
    return sorted({family.architecture.model_type for family in FAMILIES.values()})


def is_native_config(config: Mapping[str, Any]) -> bool:
    """Whether a config.json is of a checkpoint transformers loads natively as a family's architecture (used as it
    is), not an original one that prepare_model converts."""
    types = native_model_types()
    classes = {f"{kind.capitalize()}ForCausalLM" for kind in types}
    return config.get("model_type") in types or bool(classes & set(config.get("architectures") or []))


def model_type_problem(config: Mapping[str, Any]) -> str | None:
    """Why a model folder's config.json is no model glmtune trains, or None: its model_type must be one a family loads
    as (`glm`: THUDM/glm-4-9b-chat-hf) or an original checkpoint's (`chatglm`). GLM-4-0414's `glm4`, for one, would
    otherwise be taken for an original checkpoint and fail converting, naming a missing tokenizer.model. A config
    without a model_type is left to the stages that load it."""
    kind = config.get("model_type")
    native = native_model_types()
    if kind is None or kind in native or kind == ORIGINAL_MODEL_TYPE:
        return None
    titles = " and ".join(family.title for family in FAMILIES.values())
    return (f"model_type {kind!r} ({', '.join(config.get('architectures') or []) or 'no architectures'}) is not a model "
            f"glmtune trains: it trains {titles} checkpoints, native (model_type {' or '.join(map(repr, native))}, e.g. "
            f"THUDM/glm-4-9b-chat-hf) or original (model_type {ORIGINAL_MODEL_TYPE!r}, e.g. THUDM/chatglm3-6b)")
