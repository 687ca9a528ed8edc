"""log P(continuation | context), exactly as lm-evaluation-harness computes it, but faster.

Tokenisation (lm-evaluation-harness `HFLM._encode_pair` / `loglikelihood`):
trailing whitespace of the context moves to the continuation; context tokens = tok(context);
continuation tokens = tok(context + continuation)[len(context tokens):]; an empty context is
replaced by the prefix token (eos). The model reads context tokens + continuation tokens
(left-truncated to the window), the score is the float32 sum of the continuation tokens'
log-softmax, and `is_greedy` says whether every continuation token is the argmax.

Speed: requests are grouped by a caller-given key (typically: the demonstrations they share).
The longest token prefix common to a group's contexts runs through the model once, and its KV
cache serves batches of rows, each row being the rest of one context followed by one
continuation. Choices of a document, and documents sharing the same demonstrations, therefore
never recompute the shared prefix. Prefixes of several groups run in one right-padded batch,
and rows of several groups share a forward pass (an attention mask hides the padding between a
short prefix and its row; position ids continue from each prefix's own length). Models whose cache
is not attention keys and values alone (convolution or recurrent layers, sliding windows) run
every request whole.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Request:
    """One scored pair, as token ids; `group` says which requests may share a prefix."""

    context: tuple[int, ...]
    continuation: tuple[int, ...]
    group: Hashable = None


def tok_encode(tokenizer, text: str, add_bos: bool = False) -> list[int]:
    """tokenizer.encode with its default special tokens (as lm-evaluation-harness), plus an
    explicit BOS when `add_bos` (for models pretrained with BOS before every document)."""
    ids = list(tokenizer.encode(text))
    if add_bos and tokenizer.bos_token_id is not None and (not ids or ids[0] != tokenizer.bos_token_id):
        ids = [tokenizer.bos_token_id] + ids
    return ids


def encode_pair(tokenizer, context: str, continuation: str, add_bos: bool = False
                ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(context ids, continuation ids) split exactly as lm-evaluation-harness splits them."""
    if context == "" and not add_bos:
        cont = [int(t) for t in tokenizer.encode(continuation, add_special_tokens=False)]
        prefix = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
        if prefix != cont[0]:
            return (prefix,), tuple(cont)
        return tuple(cont[:1]), tuple(cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok_encode(tokenizer, context + continuation, add_bos)
    context_ids = tok_encode(tokenizer, context, add_bos)
    return tuple(context_ids), tuple(whole[len(context_ids):])


def encode_pairs(tokenizer, context: str, continuations: Sequence[str], add_bos: bool = False
                 ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """`encode_pair` for several continuations of one context, encoding the context once."""
    if context == "" and not add_bos:
        return [encode_pair(tokenizer, context, c, add_bos) for c in continuations]
    stripped = context.rstrip()
    moved = context[len(stripped):]
    context_ids = tuple(tok_encode(tokenizer, stripped, add_bos))
    return [(context_ids, tuple(tok_encode(tokenizer, stripped + moved + c, add_bos)[len(context_ids):]))
            for c in continuations]


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest prefix shared by all sequences."""
    if not sequences:
        return 0
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for sequence in sequences[1:]:
        i = 0
        while i < length and sequence[i] == first[i]:
            i += 1
        length = i
    return length


def truncate_left(request: Request, max_length: int | None) -> Request:
    """lm-evaluation-harness keeps the last max_length + 1 tokens of context + continuation."""
    if max_length is None or len(request.context) + len(request.continuation) <= max_length + 1:
        return request
    keep = max_length + 1 - len(request.continuation)
    if keep < 1:
        raise ValueError(f"continuation of {len(request.continuation)} tokens does not fit in {max_length}")
    return Request(request.context[-keep:], request.continuation, request.group)


def _continuation_scores(logprobs: torch.Tensor, targets: torch.Tensor) -> tuple[float, bool]:
    """logprobs: [n, vocab] predicting `targets` [n]."""
    picked = logprobs.gather(1, targets.unsqueeze(1)).squeeze(1)
    return float(picked.sum()), bool((logprobs.argmax(dim=-1) == targets).all())


@torch.no_grad()
def _score_plain(model, requests: list[Request], batch_tokens: int) -> list[tuple[float, bool]]:
    """No prefix sharing: every request runs whole (right-padded batches, longest first)."""
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i].context) + len(requests[i].continuation)))
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    start = 0
    while start < len(order):
        longest = len(requests[order[start]].context) + len(requests[order[start]].continuation) - 1
        size = max(1, batch_tokens // max(longest, 1))
        chunk = order[start : start + size]
        start += size
        ids = torch.zeros((len(chunk), longest), dtype=torch.long)
        for row, i in enumerate(chunk):
            tokens = (requests[i].context + requests[i].continuation)[:-1]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        logprobs = torch.log_softmax(model(input_ids=ids.to(model.device)).logits.float(), dim=-1)
        for row, i in enumerate(chunk):
            n_ctx, n_cont = len(requests[i].context), len(requests[i].continuation)
            results[i] = _continuation_scores(logprobs[row, n_ctx - 1 : n_ctx - 1 + n_cont],
                                              torch.tensor(requests[i].continuation, device=logprobs.device))
    return results


def _cache_argument(model) -> str:
    """transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


@dataclass
class _Group:
    """Requests sharing a prefix: the prefix tokens and the unique (rest, continuation) rows."""

    prefix: tuple[int, ...]
    pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]  # (context, continuation), unique
    members: list[list[int]]  # request indices per pair


def _make_group(requests: list[Request], indices: list[int]) -> _Group:
    unique: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        unique[(requests[i].context, requests[i].continuation)].append(i)
    pairs = list(unique)
    shared = common_prefix_length([context for context, _ in pairs])
    return _Group(pairs[0][0][:shared], pairs, [unique[pair] for pair in pairs])


@torch.no_grad()
def prefix_sharing_is_exact(model, longest: int) -> bool:
    """Whether the model's cache is attention keys and values alone, which prefix sharing selects
    rows of and masks the padding of: full attention layers, or sliding-window ones whose window
    holds the longest request. A convolution or recurrent state (LFM2, Mamba) would carry a short
    prefix's padding into its rows: such models score every request whole, as lm-evaluation-harness
    does."""
    windows = getattr(model, "_alignflow_cache_windows", None)
    if windows is None:  # once per model: a one-token forward shows its cache's layers
        windows = model._alignflow_cache_windows = _cache_windows(model)
    return bool(windows) and all(window is not None and window > longest for window in windows)


def _cache_windows(model) -> list[float | None]:
    """Per cache layer: how many tokens it keeps (inf for full attention, a sliding layer's window),
    None for a layer that is not keys and values."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    out = model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=model.device), use_cache=True)
    windows: list[float | None] = []
    for layer in getattr(_output_cache(out), "layers", None) or []:
        if type(layer) is DynamicLayer:
            windows.append(float("inf"))
        else:
            windows.append(layer.sliding_window if type(layer) is DynamicSlidingWindowLayer else None)
    return windows


def _select_cache(cache, rows: torch.Tensor):
    """A new cache whose row r is row `rows[r]` of `cache` (the prefix's keys and values)."""
    from transformers import DynamicCache

    layers = [(layer.keys.index_select(0, rows), layer.values.index_select(0, rows)) for layer in cache.layers]
    return DynamicCache(ddp_cache_data=layers)


@torch.no_grad()
def _score_groups(model, requests: list[Request], groups: list[_Group], batch_tokens: int,
                  results: list[tuple[float, bool]]) -> None:
    """Score groups whose prefixes run once each, several groups per forward pass.

    Pass 1 runs the groups' prefixes as one right-padded batch (padding after a prefix is never
    seen by it, causal attention) and keeps each prefix's KV cache and last log-probs. Pass 2
    runs rows (rest of a context + continuation) on top of their group's cache; the attention
    mask hides the padding between a short prefix and its row, and position ids continue from
    the prefix's own length, so every row computes exactly what it would alone.
    """
    device = model.device
    lengths = [len(group.prefix) for group in groups]
    width = max(lengths)
    ids = torch.zeros((len(groups), width), dtype=torch.long)
    for g, group in enumerate(groups):
        ids[g, : lengths[g]] = torch.tensor(group.prefix, dtype=torch.long)
    out = model(input_ids=ids.to(device), use_cache=True)
    cache = _output_cache(out)
    last_index = torch.tensor(lengths, device=device) - 1
    last = torch.log_softmax(out.logits[torch.arange(len(groups), device=device), last_index].float(), dim=-1)
    del out
    rows = [(g, context[lengths[g]:] + continuation, len(context) - lengths[g], continuation, members)
            for g, group in enumerate(groups)
            for (context, continuation), members in zip(group.pairs, group.members, strict=True)]
    rows.sort(key=lambda row: -len(row[1]))
    start = 0
    while start < len(rows):
        longest = max(len(rows[start][1]) - 1, 0)
        size = max(1, batch_tokens // max(width + longest, 1))
        chunk = rows[start : start + size]
        start += size
        logprobs = None
        if longest > 0:
            ids = torch.zeros((len(chunk), longest), dtype=torch.long)
            mask = torch.zeros((len(chunk), width + longest), dtype=torch.long)
            positions = torch.zeros((len(chunk), longest), dtype=torch.long)
            for r, (g, tokens, _, _, _) in enumerate(chunk):
                feed = tokens[:-1]
                ids[r, : len(feed)] = torch.tensor(feed, dtype=torch.long)
                mask[r, : lengths[g]] = 1
                mask[r, width : width + len(feed)] = 1
                positions[r] = torch.arange(lengths[g], lengths[g] + longest)
            selected = _select_cache(cache, torch.tensor([row[0] for row in chunk], device=device))
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           use_cache=True, **{_cache_argument(model): selected}).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1)
        for r, (g, _, n_rest, continuation, members) in enumerate(chunk):
            # position j of [last prefix log-probs, row log-probs...] predicts token j of rest + continuation
            head = last[g].unsqueeze(0)
            stacked = head if logprobs is None else torch.cat([head, logprobs[r]], dim=0)
            score = _continuation_scores(stacked[n_rest : n_rest + len(continuation)],
                                         torch.tensor(continuation, device=device))
            for i in members:
                results[i] = score


def score_requests(model, requests: Sequence[Request], *, batch_tokens: int = 8192, prefix_cache: bool = True,
                   max_length: int | None = None) -> list[tuple[float, bool]]:
    """(sum of continuation log-probs, is_greedy) per request, in request order.

    `batch_tokens` bounds rows x sequence length per forward pass. With `prefix_cache`, requests
    of one `group` share the forward pass of their common prefix, and the prefixes of several
    groups run in one batch; without it, every request runs whole, as lm-evaluation-harness
    runs it.
    """
    model.eval()
    requests = [truncate_left(r, max_length) for r in requests]
    longest = max((len(r.context) + len(r.continuation) for r in requests), default=0)
    if not prefix_cache or not prefix_sharing_is_exact(model, longest):
        return _score_plain(model, requests, batch_tokens)
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    by_key: dict[Hashable, list[int]] = defaultdict(list)
    for i, request in enumerate(requests):
        by_key[request.group if request.group is not None else request.context].append(i)
    groups = []
    for indices in by_key.values():
        group = _make_group(requests, indices)
        if group.prefix:
            groups.append(group)
        else:  # nothing shared: plain forwards
            for i, score in zip(indices, _score_plain(model, [requests[i] for i in indices], batch_tokens),
                                strict=True):
                results[i] = score
    groups.sort(key=lambda group: -len(group.prefix))
    start = 0
    while start < len(groups):
        width = len(groups[start].prefix)
        count = 1
        # several groups per pass while their padded prefixes and rows stay within the budget
        while (start + count < len(groups) and (count + 1) * width <= batch_tokens
               and sum(len(g.pairs) for g in groups[start : start + count + 1]) * width <= 4 * batch_tokens):
            count += 1
        _score_groups(model, requests, groups[start : start + count], batch_tokens, results)
        start += count
    return results
