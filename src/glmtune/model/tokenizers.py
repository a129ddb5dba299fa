"""The real GLM tokenizers as plain `transformers` fast tokenizers, built without remote code.

The official checkpoints ship a `tokenizer.model` and a `tokenization_chatglm.py` that needs
`trust_remote_code`. Both vocabularies are simple enough to rebuild with the `tokenizers` library:

* GLM-4 (`glm-4-9b-chat`): `tokenizer.model` is a tiktoken rank file (base64 bytes, rank per line).
  It becomes a byte-level BPE whose merges are every split of a token into two tokens, ranked by
  the merged token's rank, with the whole-piece shortcut (`ignore_merges`) that tiktoken takes;
  the pre-tokenizer is GLM-4's cl100k-style regex with `\\p{N}{1,3}`. The special tokens follow the
  ranks in the official order.
* ChatGLM3 (`chatglm3-6b`): `tokenizer.model` is a SentencePiece BPE model (byte fallback, identity
  normalizer, dummy prefix). It becomes a `tokenizers` BPE whose merge priority is the pieces'
  score, with the dummy prefix and the space escaping as normalizers, so `encode(text,
  add_special_tokens=False)` equals `SentencePieceProcessor.encode(text)`; the command tokens
  follow the pieces, also in the official order.

Neither tokenizer adds anything on `add_special_tokens=True` (the `[gMASK]` prefix comes from the
chat template, as everywhere in this package). Only `tokenizers` and `transformers` are needed:
the rank file and the SentencePiece protobuf are read here directly. The special tokens, their official ids,
eos / pad / unk and which reader a family's `tokenizer.model` needs are the family's (glmtune.family).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from glmtune.chat_template import get_template
from glmtune.family import Family, get_family

TOKENIZER_FILE = "tokenizer.model"


# --------------------------------------------------------------------------- GLM-4 (tiktoken ranks)


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """A tiktoken rank file: one `base64(token) rank` per line (what `tiktoken.load.load_tiktoken_bpe` reads)."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError as error:
                raise ValueError(f"{path}:{number}: not a tiktoken rank line: {line[:80]!r}") from error
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks are not the contiguous ids 0..{len(ranks) - 1}")
    return ranks


def _byte_to_unicode() -> list[str]:
    """GPT-2's printable stand-in for every byte (what the ByteLevel pre-tokenizer emits)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + extra
            extra += 1
    return [chr(table[b]) for b in range(256)]


def tiktoken_vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocabulary and BPE merges equivalent to tiktoken's rank-greedy merging.

    tiktoken merges the adjacent pair whose concatenation has the lowest rank; a BPE whose merges are
    all two-token splits of every token, ordered by the merged token's rank, does the same.
    """
    table = _byte_to_unicode()

    def text(token: bytes) -> str:
        return "".join(table[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    ranked: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            left_rank, right_rank = ranks.get(left), ranks.get(right)
            if left_rank is not None and right_rank is not None:
                ranked.append((rank, left_rank, right_rank, left, right))
    ranked.sort()  # by merged rank, then the halves' ranks (all distinct: never reaches the bytes)
    return vocab, [(text(left), text(right)) for _, _, _, left, right in ranked]


def build_tiktoken_backend(model_file: str | Path, family: Family) -> Tokenizer:
    """GLM-4's kind: a tiktoken rank file, the family's split pattern, its special tokens after the ranks."""
    if family.split_pattern is None:
        raise ValueError(f"family {family.name}: a tiktoken tokenizer needs its split_pattern")
    ranks = read_tiktoken_ranks(model_file)
    vocab, merges = tiktoken_vocab_and_merges(ranks)
    backend = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(family.split_pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    _add_specials(backend, family, first_id=len(ranks))
    return backend


# --------------------------------------------------------------------------- ChatGLM3 (SentencePiece)


@dataclass
class SentencePieceModel:
    """The parts of a SentencePiece `ModelProto` that a BPE tokenizer needs."""

    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    model_type: int = 1  # 1 unigram, 2 bpe, 3 word, 4 char
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    normalizer_name: str = ""
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True

    NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints for varint/fixed fields, bytes for length-delimited ones."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    """Parse a SentencePiece model file (sentencepiece_model.proto) without protobuf or sentencepiece."""
    spm = SentencePieceModel()
    for number, value in _fields(Path(path).read_bytes()):
        if number == 1:  # pieces
            piece, score, kind = "", 0.0, SentencePieceModel.NORMAL
            for sub, item in _fields(value):
                if sub == 1:
                    piece = item.decode("utf-8")
                elif sub == 2:
                    score = struct.unpack("<f", struct.pack("<I", item))[0]
                elif sub == 3:
                    kind = item
            spm.pieces.append((piece, score, kind))
        elif number == 2:  # trainer_spec
            for sub, item in _fields(value):
                if sub == 3:
                    spm.model_type = item
                elif sub == 24:
                    spm.treat_whitespace_as_suffix = bool(item)
                elif sub == 35:
                    spm.byte_fallback = bool(item)
                elif sub == 40:
                    spm.unk_id = _signed(item)
        elif number == 3:  # normalizer_spec
            for sub, item in _fields(value):
                if sub == 1:
                    spm.normalizer_name = item.decode("utf-8")
                elif sub == 2:
                    spm.precompiled_charsmap = item
                elif sub == 3:
                    spm.add_dummy_prefix = bool(item)
                elif sub == 4:
                    spm.remove_extra_whitespaces = bool(item)
                elif sub == 5:
                    spm.escape_whitespaces = bool(item)
    if not spm.pieces:
        raise ValueError(f"{path}: no SentencePiece pieces (not a SentencePiece model?)")
    return spm


def sentencepiece_vocab_and_merges(spm: SentencePieceModel) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary (piece -> id) and BPE merges that reproduce SentencePiece's BPE encoding.

    SentencePiece repeatedly joins the adjacent pair whose concatenation is the highest-scoring
    normal piece; the merges are every two-piece split of a normal piece, ordered by that score.
    """
    vocab = {piece: index for index, (piece, _, _) in enumerate(spm.pieces)}
    mergeable = {piece: index for index, (piece, _, kind) in enumerate(spm.pieces)
                 if kind in (SentencePieceModel.NORMAL, SentencePieceModel.USER_DEFINED)}
    ranked: list[tuple[float, int, int, int, str, str]] = []
    for piece, index in mergeable.items():
        score = spm.pieces[index][1]
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in mergeable and right in mergeable:
                ranked.append((-score, index, mergeable[left], mergeable[right], left, right))
    ranked.sort()  # by score (descending), then ids
    return vocab, [(left, right) for *_, left, right in ranked]


def sentencepiece_decoder(add_dummy_prefix: bool) -> decoders.Decoder:
    """'▁' back to spaces, byte pieces (<0xE4>) back to characters, the dummy prefix's space dropped."""
    return decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
        *([decoders.Strip(" ", 1, 0)] if add_dummy_prefix else []),
    ])


def build_sentencepiece_backend(model_file: str | Path, family: Family) -> Tokenizer:
    """ChatGLM3's kind: a SentencePiece BPE model, its own control pieces kept, the family's special tokens after."""
    spm = read_sentencepiece_model(model_file)
    unsupported = []
    if spm.model_type != 2:
        unsupported.append(f"model_type {spm.model_type} (only BPE=2)")
    if spm.remove_extra_whitespaces:
        unsupported.append("remove_extra_whitespaces")
    if spm.treat_whitespace_as_suffix:
        unsupported.append("treat_whitespace_as_suffix")
    if not spm.escape_whitespaces:
        unsupported.append("escape_whitespaces=false")
    if any(kind == SentencePieceModel.USER_DEFINED for _, _, kind in spm.pieces):
        unsupported.append("user-defined pieces")
    if unsupported:
        raise ValueError(f"{model_file}: SentencePiece settings not supported: {', '.join(unsupported)}")
    vocab, merges = sentencepiece_vocab_and_merges(spm)
    unk = spm.pieces[spm.unk_id][0] if 0 <= spm.unk_id < len(spm.pieces) else None
    backend = Tokenizer(models.BPE(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=spm.byte_fallback))
    steps = []
    if spm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
    if spm.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    backend.normalizer = normalizers.Sequence(steps)
    backend.decoder = sentencepiece_decoder(spm.add_dummy_prefix)
    # SentencePiece's own control/unknown pieces (<unk>, <s>, </s>) keep their ids.
    backend.add_special_tokens([AddedToken(piece, special=True, normalized=False)
                                for piece, _, kind in spm.pieces
                                if kind in (SentencePieceModel.CONTROL, SentencePieceModel.UNKNOWN)])
    _add_specials(backend, family, first_id=len(spm.pieces))
    return backend


# --------------------------------------------------------------------------- shared


def _model_file(folder: str | Path) -> Path:
    path = Path(folder)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} in {folder}")
    return path


def _add_specials(backend: Tokenizer, family: Family, first_id: int) -> None:
    tokens = family.special_tokens
    existing = [token for token in tokens if backend.token_to_id(token) is not None]
    if existing:
        raise ValueError(f"special tokens already in the base vocabulary: {existing}")
    backend.add_special_tokens([
        AddedToken(token, special=True, normalized=False, single_word=token in family.bare_words) for token in tokens
    ])
    _check_backend_ids(backend, tokens, first_id)


def _check_backend_ids(backend: Tokenizer, tokens: tuple[str, ...], first_id: int) -> None:
    got = {token: backend.token_to_id(token) for token in tokens}
    want = {token: first_id + offset for offset, token in enumerate(tokens)}
    if got != want:
        raise RuntimeError(f"special token ids {got} differ from the official {want}")


def _check_ids(tokenizer: PreTrainedTokenizerFast, tokens: tuple[str, ...], first_id: int) -> None:
    got = tokenizer.convert_tokens_to_ids(list(tokens))
    if got != list(range(first_id, first_id + len(tokens))):
        raise RuntimeError(f"special token ids {dict(zip(tokens, got))} are not the official ones from {first_id}")


# Family.tokenizer -> the reader of that kind of tokenizer.model.
BUILDERS: dict[str, Callable[[Path, Family], Tokenizer]] = {
    "tiktoken": build_tiktoken_backend,
    "sentencepiece": build_sentencepiece_backend,
}


def tokenizer_from_model_file(folder: str | Path, family: str) -> PreTrainedTokenizerFast:
    """The tokenizer of a registered family (glmtune.family) from a folder holding its official `tokenizer.model`."""
    spec = get_family(family, "tokenizer family")
    if spec.tokenizer not in BUILDERS:
        raise KeyError(f"family {family!r} has no tokenizer.model reader (tokenizer={spec.tokenizer!r}; "
                       f"known readers: {', '.join(BUILDERS)})")
    backend = BUILDERS[spec.tokenizer](_model_file(folder), spec)
    named = {"eos_token": spec.chat.eos, "pad_token": spec.pad, **({"unk_token": spec.unk} if spec.unk else {})}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **named,
        additional_special_tokens=[token for token in spec.special_tokens if token not in named.values()],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = get_template(family).jinja()
    _check_ids(tokenizer, spec.special_tokens, backend.get_vocab_size(with_added_tokens=False))
    return tokenizer
