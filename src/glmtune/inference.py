"""Inference like the official `inference_hf.py`: one prompt, an interactive chat, or a JSON-lines batch."""

from __future__ import annotations

import codecs
import io
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from glmtune.chat_template import ChatTemplate, encode_prompt, get_template, has_special_token, unwritten_problem
from glmtune.config_rules import model_positions
from glmtune.data.conversation import InvalidRecord, is_blank, normalize_tools, validate_conversation
from glmtune.evaluate.generation import generate
from glmtune.family import FAMILIES
from glmtune.model.loading import is_adapter, load_tokenizer, load_trained, resolve_base
from glmtune.data.surrogates import surrogate_problem
from glmtune.repeated_keys import loads, repeated_paths

ANSWERED_ROLES = ("user", "observation")  # the message a model answers


class BadRequest(ValueError):
    """Input `glmtune infer` refuses (exit 2), before any weights load where it can tell: an --input line, a prompt,
    a folder, a --template. The message is one line naming the file (and line) or the option, and the reason."""


@dataclass(frozen=True)
class Folders:
    """Where an inference's parts are: the folder given, the model folder whose weights and config.json load (the
    base for an adapter), and the tokenizer's folder (an adapter's own when it saved one, else the base's)."""

    given: Path
    model: Path
    tokenizer: Path


def model_folders(model_dir: str | Path, base_model: str | Path | None = None) -> Folders:
    """The folders `glmtune infer MODEL_DIR [--base-model BASE]` loads, each checked to be there: a missing path is
    said to be missing (transformers would take it for a Hub repo id and fail on the network)."""
    given = Path(model_dir)
    check_folder(given, "the model folder")
    if not is_adapter(given):
        if base_model is not None:  # a base would be ignored: the user thinks this folder is something it is not
            raise BadRequest(f"{given}: a whole model (config.json, no adapter_config.json), not an adapter: "
                             "--base-model is only for an adapter folder; leave it out")
        check_model(given)
        return Folders(given, given, given)
    if base_model is not None:
        check_folder(Path(base_model), "--base-model")
    try:
        base = Path(resolve_base(given, base_model))
    except FileNotFoundError as err:  # the recorded base moved; the message already says to pass --base-model
        raise BadRequest(str(err)) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BadRequest(f"{given / 'adapter_config.json'}: cannot read the base model's path from it "
                         f"({type(err).__name__}: {err})") from None
    check_model(base)
    return Folders(given, base, given if (given / "tokenizer_config.json").is_file() else base)


def check_folder(path: Path, what: str) -> None:
    """`path` is a folder on this machine (a name that is not, such as a Hub repo id, is refused)."""
    if not path.exists():
        raise BadRequest(f"{path}: {what} does not exist (glmtune infer takes a local folder, e.g. results/merged_model "
                         "or results/runs/<run>/adapter, not a Hub repo id)")
    if not path.is_dir():
        raise BadRequest(f"{path}: {what} is a file, not a folder")


def check_model(folder: Path) -> None:
    """`folder` holds a model (config.json): an adapter's recorded base or a merged folder."""
    if not (folder / "config.json").is_file():
        raise BadRequest(f"{folder}: no config.json: neither a model folder (a merged model, a base) nor an adapter "
                         "folder (adapter_config.json)")


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def check_weights(folders: Folders) -> None:
    """The weight files are there and whole, checked before they load (a traceback there): the model's (a missing
    shard, a file cut short, glmtune.model.weight_files) and an adapter's, without which peft takes the folder's path
    for a Hub repo id and fails on the network."""
    from glmtune.model.weight_files import WeightFilesError, check_safetensors_length, weight_files

    try:
        weight_files(folders.model, as_transformers_loads=True)
        if folders.given != folders.model:
            found = [folders.given / name for name in ADAPTER_WEIGHTS if (folders.given / name).is_file()]
            if not found:
                raise BadRequest(f"{folders.given}: an adapter folder (adapter_config.json) without its weights "
                                 f"({' or '.join(ADAPTER_WEIGHTS)}): an incomplete copy, or a training that did not "
                                 "finish?")
            if found[0].suffix == ".safetensors":
                check_safetensors_length(found[0])
    except WeightFilesError as err:
        raise BadRequest(str(err)) from None


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json as a dict (what the positions are read from before any weights load)."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise BadRequest(f"{path}: cannot read it ({err})") from None
    if not isinstance(config, dict):
        raise BadRequest(f"{path}: not a JSON object")
    return config


def detect_template(tokenizer: PreTrainedTokenizerBase) -> ChatTemplate:
    """The family whose chat prefix the tokenizer has (GLM-4 tokenizers carry `<sop>`, ChatGLM3's `sop`); where
    several have it (a family that extends another's layout), the one whose Jinja the folder ships (a merged model
    carries its family's), else none: refused, not guessed (a prompt laid out as another family's would differ from
    training's)."""
    vocab = tokenizer.get_vocab()
    fitting = [template for template in map(get_template, FAMILIES) if all(token in vocab for token in template.prefix)]
    if len(fitting) == 1:
        return fitting[0]
    shipped = [template for template in fitting if template.jinja() == getattr(tokenizer, "chat_template", None)]
    if len(shipped) == 1:
        return shipped[0]
    names = " or ".join(template.name for template in fitting) if fitting else " or ".join(FAMILIES)
    why = (f"the chat prefixes of {names} all fit the tokenizer and its chat template is none of theirs" if fitting
           else "no registered family's chat prefix fits the tokenizer")
    raise BadRequest(f"cannot tell the chat template from the tokenizer ({why}); pass --template ({names})")


def template_problem(tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, chosen: bool) -> str | None:
    """Why `template` cannot lay out prompts for this tokenizer (a special token it lacks: the model is of another
    family), naming --template (chosen: the user's) and the families that fit; None when it fits."""
    roles = (template.role_token(role) for role in ("system", "user", "assistant", "observation"))
    needed = [*template.prefix, *template.stop, *roles, *([template.end_of_turn] if template.end_of_turn else [])]
    missing = next((token for token in needed if not has_special_token(tokenizer, token)), None)
    if missing is None:
        return None
    fitting = [name for name, family in FAMILIES.items()
               if all(has_special_token(tokenizer, token) for token in family.chat.prefix)]
    advice = (f"pass --template {' or '.join(fitting)}, or leave --template out to detect it" if fitting
              else "no registered family's template fits it")
    named = f"--template {template.name}" if chosen else f"the detected template {template.name}"
    return (f"{named} lays conversations out with the special token {missing!r}, which the model's tokenizer does "
            f"not have: the model is not of that family; {advice}")


def length_problem(prompt_tokens: int, max_new_tokens: int, positions: int | None) -> str | None:
    """Why a prompt and its answer do not fit the positions the model was trained for (as the workflow refuses,
    glmtune.config_rules.positions_problem: past them rotary positions go on and the model writes where it never
    was), or None."""
    if positions is None or prompt_tokens + max_new_tokens <= positions:
        return None
    return (f"the prompt is {prompt_tokens} tokens (the chat layout and the assistant's role token included), and "
            f"with --max-new-tokens {max_new_tokens} that comes to {prompt_tokens + max_new_tokens}, but the model was "
            f"trained for {positions} positions (its config.json's max_position_embeddings): shorten the prompt or "
            "lower --max-new-tokens")


class Chat:
    """A model folder (merged, or an adapter on its base) with its template, answering message lists.

    Made without loading the weights: the folders, the template and the model's positions are checked first (a
    BadRequest), and each prompt's length before it is generated; the weights load on the first answer (or load())."""

    def __init__(self, model_dir: str | Path, base_model: str | Path | None = None, template: str | None = None,
                 max_new_tokens: int = 256, batch_size: int = 16, trust_remote_code: bool = False) -> None:
        from glmtune.model.base_identity import check_base
        from glmtune.model.remote_code import check_remote_code

        self.folders = model_folders(model_dir, base_model)
        self.base_model, self.trust_remote_code = base_model, trust_remote_code
        check_remote_code(self.folders.model, trust_remote_code)  # before the tokenizer reads the model's config
        if self.folders.given != self.folders.model:
            check_base(self.folders.given, self.folders.model)  # a wrong base: its tokenizer may be the wrong one too
        self.tokenizer = load_tokenizer(self.folders.tokenizer, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"  # as load_trained: generation continues from the right edge of every row
        try:
            self.template = get_template(template) if template else detect_template(self.tokenizer)
        except BadRequest as err:
            raise BadRequest(f"{self.folders.tokenizer}: {err}") from None
        if problem := template_problem(self.tokenizer, self.template, template is not None):
            raise BadRequest(f"{self.folders.tokenizer}: {problem}")
        self.positions = model_positions(read_config(self.folders.model))
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._model: PreTrainedModel | None = None

    @property
    def model(self) -> PreTrainedModel:
        """The weights, loaded on first use."""
        if self._model is None:
            check_weights(self.folders)
            self._model, _ = load_trained(self.folders.given, self.base_model, trust_remote_code=self.trust_remote_code)
        return self._model

    def load(self) -> None:
        """Load the weights now (the interactive chat, before its first question)."""
        _ = self.model

    def prompts(self, conversations: Sequence[list[dict[str, Any]]], wheres: Sequence[str] | None = None) -> list[list[int]]:
        """The token ids of each conversation's prompt; one too long for the model stops with its `where` (the
        --input file and line, --prompt) and the numbers."""
        prompts = []
        for number, messages in enumerate(conversations):
            if problem := unwritten_problem(self.template, messages):
                raise BadRequest(f"{wheres[number] if wheres else f'prompt {number + 1}'}: \"messages\": {problem}")
            ids = encode_prompt(self.tokenizer, self.template, messages)  # its special tokens: checked in __init__
            if problem := length_problem(len(ids), self.max_new_tokens, self.positions):
                raise BadRequest(f"{wheres[number] if wheres else f'prompt {number + 1}'}: {problem}")
            prompts.append(ids)
        return prompts

    def answer(self, conversations: Sequence[list[dict[str, Any]]], wheres: Sequence[str] | None = None) -> list[str]:
        """Greedy answers; every prompt is checked (prompts) before the weights load or anything generates."""
        prompts = self.prompts(conversations, wheres)
        return generate(self.model, self.tokenizer, self.template, prompts, self.batch_size, self.max_new_tokens,
                        progress=len(prompts) > self.batch_size)


Request = tuple[dict[str, Any], list[dict[str, Any]]]  # (the input row, the conversation to answer)
Located = tuple[str, Request]  # (where it came from: "FILE, line N" or "--prompt", the request)


def prompt_request(text: str) -> Located:
    """--prompt's text as a request, refused as an --input line's "prompt" is when empty (or blank)."""
    if is_blank(text):
        raise BadRequest(f"--prompt: empty{' (only whitespace)' if text else ''}; give the text to answer")
    row = {"prompt": text}
    if half := surrogate_problem(row):  # bytes of the command line that are not UTF-8 arrive as lone surrogates
        raise BadRequest(f"--prompt: {half}")
    return "--prompt", (row, [{"role": "user", "content": text}])


def read_requests(path: str | Path) -> list[Request]:
    """Every line of a JSON-lines --input file as a request (conversation_of), all checked before any model loads:
    a bad line stops with the file, the line and the reason."""
    return [request for _, request in located_requests(path)]


def text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(number, text) of each line of a UTF-8 file (a BOM allowed), line breaks as Python's text files read them;
    a file that cannot be read or is not UTF-8 stops with the file (and the line) and the reason."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:  # missing, a folder, no permission: strerror says which
        raise BadRequest(f"{path}: cannot read it ({err.strerror or err})") from None
    data = data.removeprefix(codecs.BOM_UTF8)  # here, not by utf-8-sig: an error's offset is then into `data`
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:  # the bytes before the bad one decode: count their lines
        before = data[:err.start].decode("utf-8") + "x"  # "x": the bad byte's line, even when it starts one
        number = sum(1 for _ in io.StringIO(before, newline=None))
        raise BadRequest(f"{path}, line {number}: not UTF-8 (byte 0x{data[err.start]:02x}, {err.reason}): save the "
                         "file as UTF-8") from None
    return enumerate(io.StringIO(text, newline=None), 1)


def located_requests(path: str | Path) -> list[Located]:
    """read_requests with where each request came from ("FILE, line N"), for the messages of later checks."""
    requests = []
    for number, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as err:
            raise BadRequest(f"{where}: not JSON ({err.msg}, column {err.colno})") from None
        if repeated := repeated_paths(row):
            raise BadRequest(f"{where}: {', '.join(repeated)} written twice in one object: JSON keeps only the "
                             "last, which may not be the one meant")
        if half := surrogate_problem(row):
            raise BadRequest(f"{where}: {half}")
        requests.append((where, (row, conversation_of(row, where))))
    if not requests:
        raise BadRequest(f"{path}: no request in the file")
    return requests


# Keys beside "prompt" that say part of a conversation (the demos' and LLaMA-Factory's names): not carried along
# like an id would be, as the answer would be made without them.
CONVERSATION_KEYS = ("system", "history", "tools", "instruction", "input", "query", "conversations")


def conversation_of(row: Any, where: str) -> list[dict[str, Any]]:
    """{"prompt": text} (one user message) or {"messages": [...]}: a conversation the answer completes, by the
    training data's rules (glmtune.data.conversation), ending with the message the model answers."""
    if not isinstance(row, dict) or ("prompt" in row) == ("messages" in row):
        keys = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
        raise BadRequest(f'{where}: expected an object with "prompt" (a string) or "messages" (a list of '
                         f'{{"role", "content"}} objects), one of them; got {keys or "an empty object"}')
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or is_blank(row["prompt"]):
            raise BadRequest(f'{where}: "prompt" must be a non-empty string, got {row["prompt"]!r}')
        if meant := [key for key in CONVERSATION_KEYS if key in row]:  # kept as other keys, answered without them
            raise BadRequest(f'{where}: "prompt" beside {", ".join(map(repr, meant))}: a "prompt" is answered alone '
                             'as one user message; write the conversation as "messages" (a system message first, '
                             'earlier turns, tools on the system message), e.g. {"messages": [{"role": "system", '
                             '"content": ...}, {"role": "user", "content": ...}]}')
        return [{"role": "user", "content": row["prompt"]}]
    messages = row["messages"]
    try:  # the answer's place taken by a stand-in, so the training rules apply as they are
        if isinstance(messages, list):  # tools in either form training reads (OpenAI-style or plain functions)
            messages = [{**msg, "tools": normalize_tools(msg["tools"], f"message {position}: ")}
                        if isinstance(msg, dict) and msg.get("tools") else msg for position, msg in enumerate(messages)]
        validate_conversation([*messages, {"role": "assistant", "content": "answer"}] if isinstance(messages, list) else messages)
    except InvalidRecord as err:
        raise BadRequest(f'{where}: "messages": {err}') from None
    if messages[-1]["role"] not in ANSWERED_ROLES:
        role = messages[-1]["role"]
        raise BadRequest(f'{where}: "messages" ends with {"an" if role[0] in "aeiou" else "a"} {role} message; the '
                         f"model answers the last {' or '.join(ANSWERED_ROLES)} message, so end with one")
    return list(messages)


def batch_file(chat: Chat, requests: Iterable[Request], out: TextIO, wheres: Sequence[str] | None = None) -> int:
    """Answer every request (read_requests); each output line is its input row with "response" added. `wheres`
    (located_requests) name the requests in the message about one too long for the model."""
    requests = list(requests)
    for (row, _), response in zip(requests, chat.answer([conversation for _, conversation in requests], wheres)):
        out.write(json.dumps({**row, "response": response}, ensure_ascii=False) + "\n")
    return len(requests)


def interactive(chat: Chat, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
    """A multi-turn chat on the terminal; `clear` starts over, `exit` (or end of input) quits. An empty line asks
    again (sent, it would be an empty user message whose answer stays in the history); a message that would take
    the conversation past the model's positions is not sent, with the reason; an empty answer is said, and its
    exchange left out of the history (an empty assistant message is refused in any conversation)."""
    history: list[dict[str, Any]] = []
    stdout.write("Chat with the model. Type 'clear' to start over, 'exit' to quit.\n")
    while True:
        stdout.write("\nUser: ")
        stdout.flush()
        line = stdin.readline()
        if not line or line.strip() == "exit":
            return
        if line.strip() == "clear":
            history = []
            continue
        if is_blank(line):
            continue
        asked = [*history, {"role": "user", "content": line.rstrip("\n")}]
        try:
            response = chat.answer([asked], ["the conversation"])[0]
        except BadRequest as err:  # too long: the chat goes on without this message
            stdout.write(f"Not sent: {err}; or type 'clear' to start over\n")
            continue
        if is_blank(response):  # kept, it would be an empty assistant message: every later one refused for it
            stdout.write("Assistant: (no answer: the model wrote nothing but its end; this exchange is not kept in the "
                         "conversation)\n")
            continue
        history = [*asked, {"role": "assistant", "content": response}]
        stdout.write(f"Assistant: {response}\n")
