"""Conversations through the model's chat template: training examples with assistant-only labels, and replies.

SmolLM2's template has no `{% generation %}` markers, so the assistant spans are found by rendering:
the text of the conversation up to an assistant turn (with the generation prompt) is a prefix of the
text through that turn, and the characters between the two are the turn's own tokens (its content and
the end-of-turn marker, so the model learns to stop). Tokens outside those spans get the label -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IGNORE_INDEX = -100


class TemplateError(ValueError):
    """The chat template does not render conversations as a sequence of growing prefixes."""


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _render(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = _render(tokenizer, messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], True)
        through = _render(tokenizer, messages[: index + 1], False)
        if not through.startswith(before) or not text.startswith(through):
            raise TemplateError(f"the chat template does not render turn {index} as an extension of the ones before")
        spans.append((len(before), len(through)))
    return text, spans


def encode_example(tokenizer: Any, messages: list[dict[str, str]], max_length: int) -> Example | None:
    """Token ids and labels (assistant tokens only); None when no assistant token fits in `max_length`."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoded["input_ids"])[:max_length]
    offsets = list(encoded["offset_mapping"])[:max_length]
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(input_ids, offsets, strict=True)
    ]
    example = Example(input_ids, labels)
    return example if example.trained_tokens else None


def generate_reply(model: Any, tokenizer: Any, messages: list[dict[str, str]], parameters: dict[str, Any]) -> str:
    """The assistant's next turn, with the scoring contract's generation parameters."""
    import torch

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = {name: tensor.to(model.device) for name, tensor in prompt.items()}
    do_sample = bool(parameters.get("do_sample", False))
    options: dict[str, Any] = {
        "max_new_tokens": int(parameters.get("max_new_tokens", 200)),
        "do_sample": do_sample,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    }
    if do_sample:
        options["temperature"] = max(float(parameters.get("temperature", 1.0)), 1e-5)
        options["top_p"] = float(parameters.get("top_p", 1.0))
    if "repetition_penalty" in parameters:
        options["repetition_penalty"] = float(parameters["repetition_penalty"])
    with torch.inference_mode():
        output = model.generate(**prompt, **options)
    new_tokens = output[0, prompt["input_ids"].shape[1] :]
    return str(tokenizer.decode(new_tokens, skip_special_tokens=True)).strip()


def load_for_replies(folder: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of a transformers model folder, ready for `generate_reply`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def reply_from_folder(folder: Any, messages: list[dict[str, str]], parameters: dict[str, Any]) -> str:
    """Load a transformers model folder and answer once."""
    model, tokenizer = load_for_replies(folder)
    return generate_reply(model, tokenizer, messages, parameters)
