"""The prepare_model stage: a fetched or local model folder made ready for every later stage.

A native (`-hf`) folder is linked file by file; an original ChatGLM3 / GLM-4 checkpoint is converted to native weights
with a fast tokenizer; with model.trust_remote_code an original folder is kept with its own modeling code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from glmtune.family import is_native_config, model_type_problem
from glmtune.fetch import FetchError, link_local_model
from glmtune.model.weight_files import weight_files


def prepare_model_folder(name: str, spec: dict[str, Any], source: str | Path, out_dir: str | Path) -> Path:
    """The prepare_model stage (make_model_folder), and for a `model.path` folder the record of what it was made from,
    which planning compares the folder with (glmtune.model.source_record)."""
    from glmtune.model.source_record import record_source

    prepared = make_model_folder(name, spec, source, out_dir)
    if spec.get("source") == "path":
        record_source(out_dir, source, bool(spec.get("trust_remote_code")))
    return prepared


def make_model_folder(name: str, spec: dict[str, Any], source: str | Path, out_dir: str | Path) -> Path:
    """The model folder at out_dir, native unless trust_remote_code is asked for.

    A native (`-hf`) folder is linked file by file; an original ChatGLM3 / GLM-4 checkpoint (remote-code layout)
    is converted to GlmForCausalLM with a fast tokenizer, so nothing downstream needs remote code. With
    `spec["trust_remote_code"]` an original checkpoint is kept as it is instead (see glmtune.model.remote_code).
    A compute job on a cluster: converting 18 GB is no work for a login node.
    """
    from glmtune.model.convert_original import to_native
    from glmtune.model.folder_template import family_template_files

    source = Path(source)
    if not (source / "config.json").is_file():
        return link_local_model(name, source, out_dir)  # raises the FetchError naming the path
    config = json.loads((source / "config.json").read_text(encoding="utf-8-sig"))
    if problem := model_type_problem(config):  # a download: a model.path folder was checked before any job
        raise FetchError(f"model {name!r}: {source / 'config.json'}: {problem}")
    if not spec.get("trust_remote_code") and not is_native_config(config):
        return to_native(source, out_dir)  # reads the shards through glmtune.model.weight_files
    weight_files(source)  # linked as it is: a hub download or a copy cut short stops here, not when training loads it
    if spec.get("trust_remote_code"):
        return keep_remote_code(name, source, out_dir)
    return link_local_model(name, source, out_dir, family_template_files(name, source, spec.get("template")))


def keep_remote_code(name: str, source: Path, out_dir: str | Path) -> Path:
    """model.trust_remote_code: the original folder linked as it is, with our fast tokenizer beside it."""
    from glmtune.model.convert_original import original_family
    from glmtune.model.tokenizers import tokenizer_from_model_file
    from glmtune.model.remote_code import modeling_file, prepare_folder

    if modeling_file(source) is None:
        raise FetchError(
            f"model {name!r}: model.trust_remote_code is true, but {source / 'config.json'} maps no AutoModelForCausalLM "
            f"to a modeling file in that folder (auto_map); it is not an original ChatGLM3 / GLM-4 checkpoint with its "
            f"remote code. Set model.trust_remote_code: false (native and original folders then load without remote code)."
        )
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8-sig"))  # ChatGLM3's has CRLF
        tokenizer = tokenizer_from_model_file(source, original_family(config))
    except (OSError, ValueError, RuntimeError) as exc:
        raise FetchError(f"model {name!r}: cannot build the fast tokenizer from {source / 'tokenizer.model'} ({exc}); "
                         f"model.trust_remote_code runs only the original modeling code, not its tokenizer.") from exc
    return prepare_folder(source, out_dir, tokenizer)
