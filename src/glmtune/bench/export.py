"""bench-export: peak memory of the shard-by-shard export against the whole-model one, on one random model.

A random model of a real architecture (sizes overridable to scale it down) is written shard by shard in bf16
(never held whole), with a random LoRA on every linear module of the decoder layers and a tokenizer trained on a
few sentences; each export path then runs in its own process and reports its peak resident memory: VmHWM of
/proc/self/status, the high-water mark of the process's own memory. Not getrusage's ru_maxrss: Linux carries the
parent's high-water mark through fork and exec into it, so every child would report at least this process's peak
(the model's build: 3.0 GB where the sharded export's own peak is 1.2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from glmtune.bench.models import arch_config

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj"]
RUN = r"""
import json, resource, sys
from glmtune.settings import ExportSettings, ModelSettings
path, adapter, base, out, test, settings = sys.argv[1:7]
settings = ExportSettings.from_config(json.loads(settings))
model = ModelSettings.from_config({"template": "glm4", "trust_remote_code": False})
if path == "sharded":
    from glmtune.export.merge import merge_adapter as run
else:
    from glmtune.export.whole import merge_whole as run
worst = run(adapter, base, out, test, settings, model)
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"peak_rss": hwm, "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "worst": worst}))
"""


def build(config_json: str | Path, work: Path, overrides: dict[str, int], shard_gb: float, seed: int = 0) -> dict[str, Path]:
    """The random base (bf16 shards of shard_gb), its LoRA adapter (r 8 on every linear module) and test prompts."""
    from peft import LoraConfig
    from transformers import GenerationConfig, GlmForCausalLM

    from glmtune.export.shards import ShardWriter, plan_shards, write_index
    from glmtune.model.tiny import train_tokenizer
    from glmtune.model.tokenizer_files import save_tokenizer

    torch.manual_seed(seed)
    config = arch_config(config_json)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.head_dim = config.hidden_size // config.num_attention_heads
    config.dtype = torch.bfloat16
    base, adapter = work / "base", work / "adapter"
    base.mkdir(parents=True)
    adapter.mkdir()
    with torch.device("meta"):
        shapes = {name: tuple(p.shape) for name, p in GlmForCausalLM(config).state_dict().items()}
    from glmtune.export.shards import Entry

    entries = {name: Entry("", torch.bfloat16, shape) for name, shape in shapes.items()}
    plan = plan_shards(list(shapes), entries, torch.bfloat16, int(shard_gb * 1e9))
    for file, names in plan.items():
        writer = ShardWriter(base / file, {name: (torch.bfloat16, shapes[name]) for name in names})
        for name in names:
            tensor = torch.ones(shapes[name]) if name.endswith("norm.weight") else torch.randn(shapes[name]) * 0.02
            writer.add(name, tensor.to(torch.bfloat16))
        writer.close()
    write_index(base, plan, sum(torch.Size(s).numel() * 2 for s in shapes.values()))
    config.save_pretrained(base)
    GenerationConfig(eos_token_id=config.eos_token_id, do_sample=False).save_pretrained(base)
    texts = ["类型#裙*颜色#红色*风格#复古", "这条裙子是红色的复古风格,适合夏天穿。", "hello world 123"] * 20
    tokenizer = train_tokenizer(texts, 300, "glm4")
    save_tokenizer(tokenizer, base)
    save_tokenizer(tokenizer, adapter)
    LoraConfig(r=8, lora_alpha=16, target_modules=LORA_TARGETS, task_type="CAUSAL_LM",
               base_model_name_or_path=str(base)).save_pretrained(adapter)
    lora = {}
    for name, shape in shapes.items():
        module = name.removesuffix(".weight")
        if module.split(".")[-1] in LORA_TARGETS:
            lora[f"base_model.model.{module}.lora_A.weight"] = torch.randn(8, shape[1]) * 0.02
            lora[f"base_model.model.{module}.lora_B.weight"] = torch.randn(shape[0], 8) * 0.02
    from safetensors.torch import save_file

    save_file(lora, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    test = work / "test.jsonl"
    rows = [{"conversations": [{"role": "user", "content": text}, {"role": "assistant", "content": "好"}]} for text in texts[:2]]
    test.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return {"base": base, "adapter": adapter, "test": test}


def measure(path: str, made: dict[str, Path], out: Path, settings: dict) -> dict:
    """Run one export path in its own interpreter; its peak RSS (bytes) and largest logit difference."""
    done = subprocess.run([sys.executable, "-c", RUN, path, str(made["adapter"]), str(made["base"]), str(out),
                           str(made["test"]), json.dumps(settings)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {path} export failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_export(config_json: str | Path, work: str | Path, overrides: dict[str, int], shard_gb: float, dtype: str,
                 paths: tuple[str, ...] = ("sharded", "whole")) -> str:
    """Build the random model in `work` (which must not exist), export it each way, and a Markdown table."""
    from glmtune.inference import BadRequest

    work = Path(work)
    if work.exists():  # mkdir would fail with a traceback
        raise BadRequest(f"{work}: exists; give a new folder (the benchmark writes a model and two exports into it)")
    work.mkdir(parents=True)
    made = build(config_json, work, overrides, shard_gb)
    files = sorted(made["base"].glob("*.safetensors"))
    size, largest = sum(f.stat().st_size for f in files), max(f.stat().st_size for f in files)
    params = size // 2
    settings = {"tolerance": 1e-3, "dtype": dtype, "export_size": shard_gb}
    gb = 1e9
    lines = [f"random GLM ({params / 1e9:.2f} B parameters: {size / gb:.2f} GB in bf16, {len(files)} shards, largest "
             f"{largest / gb:.2f} GB; fp32 {4 * params / gb:.2f} GB), LoRA r 8 on {', '.join(LORA_TARGETS)}, export "
             f"dtype {dtype}, export_size {shard_gb} GB", "",
             "| path | peak RSS | ÷ model size (bf16) | ÷ fp32 model | goal 2 × largest shard + 1 GB | max logit diff |",
             "|---|---|---|---|---|---|"]
    goal = 2 * largest + gb
    for path in paths:
        result = measure(path, made, work / f"merged_{path}", settings)
        peak = result["peak_rss"]
        lines.append(f"| {path} | {peak / gb:.2f} GB | {peak / size:.2f} | {peak / (4 * params):.2f} | "
                     f"{'met' if peak <= goal else 'missed'} ({goal / gb:.2f} GB) | {result['worst']:.2g} |")
    return "\n".join(lines)
