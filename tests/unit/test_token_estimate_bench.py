"""The token-estimate benchmark's LLaMA-2 (Phi-3) counter, through the npm tokenizer the project pins."""

from __future__ import annotations

from benchmarks.token_estimate import PHI3_TEMPLATE_TOKENS_PER_MESSAGE, estimated, llama_phi3_counts


def test_phi3_counts_add_the_chat_template_to_each_messages_llama_tokens() -> None:
    rows = [
        [{"role": "user", "content": "Hello world!"}, {"role": "assistant", "content": "Hi."}],
        [{"role": "user", "content": "The capital of France is Paris."}, {"role": "assistant", "content": "Yes."}],
    ]

    counts = llama_phi3_counts(rows)

    # "Hello world!" is 3 LLaMA-2 tokens and "Hi." 2: the tokenizer really ran, it did not estimate.
    assert counts[0] == 3 + 2 + 2 * PHI3_TEMPLATE_TOKENS_PER_MESSAGE
    assert counts[1] > counts[0] and estimated(rows[0]) == -(-len("Hello world!Hi.") // 4) + 2 * 4
