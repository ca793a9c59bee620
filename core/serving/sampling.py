"""Next-token choice for a batch whose rows each have their own settings.

The same arithmetic as transformers' generate (float32 logits; repetition penalty, then temperature,
top-k, top-p), so a greedy row picks exactly the token a lone ``generate`` call would. transformers'
logits processors take one setting for the whole batch, hence these few lines.
"""

from __future__ import annotations

from typing import Any


def choose_tokens(
    logits: Any,  # (n, vocab), any float dtype
    seen: Any,  # (n, vocab) bool: tokens in each row's prompt or answer so far
    penalty: Any,  # (n, 1) float32, 1.0 = none
    temperature: Any,  # (n, 1) float32, 0 = greedy
    top_p: Any,  # (n, 1) float32
    top_k: int,  # 0 = off
    is_any_sampled: bool,
    is_any_penalized: bool = True,
) -> Any:
    """(n,) token ids."""
    import torch

    scores = logits.float()
    if is_any_penalized:  # a penalty of 1.0 changes nothing; skipping it saves passes over (n, vocab)
        penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
        scores = torch.where(seen, penalized, scores)
    greedy = scores.argmax(dim=-1)
    if not is_any_sampled:
        return greedy
    scaled = scores / temperature.clamp_min(1e-5)
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    ordered, order = torch.sort(scaled, descending=False, dim=-1)
    cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[:, -1] = False  # always keep the most likely token
    drop = drop_sorted.scatter(1, order, drop_sorted)
    scaled = scaled.masked_fill(drop, float("-inf"))
    sampled = torch.multinomial(scaled.softmax(dim=-1), num_samples=1).squeeze(1)
    return torch.where(temperature.squeeze(1) > 0, sampled, greedy)
