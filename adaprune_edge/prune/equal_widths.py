"""Equal widths in every layer, for families llama.cpp can only load with uniform layers (archs:
`per_layer = False`, e.g. Qwen3, Gemma 3): the allocation's removal steps per layer are replaced by their
rounded mean, so every pruned layer keeps the same number of heads, KV groups and FFN channels (each
layer still removes its own least important units). All layers start from the same dense shape, so the
same steps give the same shape."""

from __future__ import annotations


def equal_steps(steps: dict[int, tuple[int, int]], layers: list[int]) -> dict[int, tuple[int, int]]:
    """One (head steps, FFN steps) pair for every layer in `layers`: the rounded mean of `steps`."""
    if not layers:
        return {}
    n = len(layers)
    k_head = round(sum(steps.get(i, (0, 0))[0] for i in layers) / n)
    k_ffn = round(sum(steps.get(i, (0, 0))[1] for i in layers) / n)
    return {i: (k_head, k_ffn) for i in layers}
