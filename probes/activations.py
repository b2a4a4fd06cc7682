"""Activation datasets: run a model over many texts and keep the activations at chosen hook
points and positions, as numpy arrays ready for scikit-learn.

Only the requested hook points are cached (`run_with_cache(names_filter=[...])`), and the model
stops after the deepest block that holds one of them (`stop_at_layer`), so asking for
`blocks.0.hook_resid_post` of a 12-layer model runs one block, not twelve.

Texts of unequal length are batched without changing any activation: texts are sorted by length
(so a batch holds texts of similar length), each batch is right-padded to its longest text, and
only real positions are read. Right padding is exact because every attention in nanolens is
causal: a position never sees the positions after it, so the padding after a text's last token
cannot reach any position of that text. Texts longer than the model's context are refused
(or, with `truncate=True`, cropped to their last `block_size` tokens, positions shifted to match).

Memory stays bounded: the outputs are preallocated once (`[rows, d]` per hook) and each batch is
written into them as soon as it has run, so at most one batch of full activations exists at a
time. With `out_dir`, the outputs go to `.npy` files on disk, written batch by batch with plain
file writes (no pages of the output stay resident), and come back as read-only memory maps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nanolens.models import GPT
from nanolens.models.hook_names import resolve_hooks, stop_layer

from .datasets import LabelledTexts
from .positions import Position, PositionSpec, normalise_positions



@dataclass
class Activations:
    """Activations of many texts at some hook points, one row per reading position.

    `acts[hook]` is a float array `[n_rows, d]` (d = d_model for residual-stream hooks; per-head
    hooks such as `attn.hook_z` are flattened to `n_heads * d_head`). For a single position per
    text (`last`, `mean`, an index, a span) there is one row per text; for `all` there is one row
    per token, and `text_index`/`position` say which. `labels` (if given) are per row.
    `token` is the token id at the reading position (-1 for pooled rows: `mean` and spans), which
    is what a Hewitt & Liang control task assigns its random labels by.
    """

    acts: dict[str, np.ndarray]
    labels: np.ndarray | None
    text_index: np.ndarray
    position: np.ndarray
    token: np.ndarray
    positions: str = "last"
    label_names: list[str] | None = None
    out_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, hook: str) -> np.ndarray:
        try:
            return self.acts[hook]
        except KeyError:
            raise KeyError(f"no activations for {hook!r}; extracted hooks are: {', '.join(self.acts)}") from None

    def __contains__(self, hook: str) -> bool:
        return hook in self.acts

    def __len__(self) -> int:
        return len(self.text_index)

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    @property
    def n_texts(self) -> int:
        return int(self.text_index.max()) + 1 if len(self.text_index) else 0

    def __repr__(self) -> str:
        shapes = ", ".join(f"{h}: {tuple(a.shape)}" for h, a in self.acts.items())
        where = f", on disk at {self.out_dir}" if self.out_dir is not None else ""
        return f"Activations({len(self)} rows from {self.n_texts} texts, positions={self.positions!r}, {shapes}{where})"

    @classmethod
    def load(cls, out_dir: str | Path) -> "Activations":
        """Open activations written by `extract_activations(..., out_dir=...)` (memory-mapped)."""
        out_dir = Path(out_dir)
        meta_file = out_dir / "activations.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{out_dir} holds no activations.json; was it written by extract_activations(out_dir=...)?")
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        acts = {hook: np.load(out_dir / name, mmap_mode="r") for hook, name in meta["files"].items()}
        labels = np.load(out_dir / "labels.npy", allow_pickle=False) if (out_dir / "labels.npy").is_file() else None
        rows = np.load(out_dir / "rows.npy", allow_pickle=False)
        return cls(acts, labels, rows[:, 0], rows[:, 1], rows[:, 2], meta["positions"], meta.get("label_names"), out_dir, meta.get("info", {}))


# ---- inputs ----------------------------------------------------------------------------------
def _as_token_lists(model: GPT, data: Any) -> list[list[int]]:
    if isinstance(data, torch.Tensor):
        if data.dim() == 1:
            data = data.unsqueeze(0)
        if data.dim() != 2:
            raise ValueError(f"a token tensor must be [n_texts, pos], got shape {tuple(data.shape)}")
        return [row.tolist() for row in data.cpu()]
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"a token array must be [n_texts, pos], got shape {data.shape}")
        return [list(map(int, row)) for row in data]
    if isinstance(data, str):
        data = [data]
    data = list(data)
    if data and all(isinstance(t, str) for t in data):
        tokenizer = model._require_tokenizer() if hasattr(model, "_require_tokenizer") else model.tokenizer
        out = []
        for i, text in enumerate(data):
            try:
                out.append(list(tokenizer.encode(text)))
            except ValueError as err:
                raise type(err)(f"text {i} ({_preview(text)}): {err}") from None
        return out
    if all(isinstance(t, (list, tuple)) or isinstance(t, torch.Tensor) for t in data):
        return [[int(i) for i in t] for t in data]
    raise TypeError(
        "texts_or_tokens must be a list of strings, a LabelledTexts, a [n, pos] token tensor/array, "
        f"or a list of token-id lists; got a list holding {type(data[0]).__name__ if data else 'nothing'}"
    )


def _is_text(data: Any) -> bool:
    """Strings (or a LabelledTexts' texts), as opposed to token ids given as they are."""
    if isinstance(data, str):
        return True
    return isinstance(data, (list, tuple)) and bool(data) and all(isinstance(t, str) for t in data)


def _preview(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


@dataclass
class _Plan:
    """Where each text is read: a start..end span per row (end exclusive; length 1 = one token)."""

    ids: list[list[int]]
    starts: list[np.ndarray]  # per text: row starts (token indices)
    ends: list[np.ndarray]  # per text: row ends
    row_offset: np.ndarray  # per text: its first row
    n_rows: int
    cut: list[int]  # tokens dropped from the front by truncation, per text
    pooled: list[bool]  # per text: rows are means over spans (position and token then read -1)


def _plan(model: GPT, ids: list[list[int]], positions: str | list[Position], truncate: bool, reserved: int = 0) -> _Plan:
    """`reserved`: context positions taken before every text (its BOS token), not for reading."""
    block = model.config.block_size - reserved
    cut = [0] * len(ids)
    for i, t in enumerate(ids):
        if not t:
            raise ValueError(f"text {i} is empty (no tokens); remove it, every text needs at least one token")
        if len(t) > block:
            if not truncate:
                raise ValueError(
                    f"text {i} is {len(t)} tokens, longer than the model's context (block_size={block}); "
                    f"shorten the texts to at most {block} tokens (e.g. LabelledTexts.crop({block})), or pass "
                    f"truncate=True to keep each text's last {block} tokens"
                )
            cut[i] = len(t) - block
            ids[i] = t[cut[i]:]
    starts, ends, pooled = [], [], []
    for i, t in enumerate(ids):
        n = len(t)
        pooled.append(positions == "mean" or (isinstance(positions, list) and isinstance(positions[i], tuple)))
        if positions == "last":
            s, e = np.array([n - 1]), np.array([n])
        elif positions == "all":
            s, e = np.arange(n), np.arange(1, n + 1)
        elif positions == "mean":
            s, e = np.array([0]), np.array([n])
        else:
            p = positions[i]
            full = n + cut[i]
            if p is None:
                a, b = full - 1, full
            elif isinstance(p, tuple):
                a, b = p
                # negative ends count from the end; (-k, 0) is the last k tokens
                a, b = (a + full if a < 0 else a), (b + full if b < 0 or (b == 0 and a < 0) else b)
                if not 0 <= a < b <= full:
                    raise ValueError(f"span {p} of text {i} does not fit its {full} tokens; a span is (start, end) with 0 <= start < end <= length")
            else:
                a = p + full if p < 0 else p
                if not 0 <= a < full:
                    raise ValueError(f"position {p} is outside text {i} ({full} tokens); a position indexes its tokens (negative: from the end)")
                b = a + 1
            a, b = a - cut[i], b - cut[i]
            if a < 0:
                raise ValueError(
                    f"text {i}: position {p} falls in the {cut[i]} tokens that truncate=True cut from its front; "
                    f"crop the text around the position instead so it fits block_size={model.config.block_size}"
                )
            s, e = np.array([a]), np.array([b])
        starts.append(s)
        ends.append(e)
    counts = np.array([len(s) for s in starts])
    row_offset = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return _Plan(ids, starts, ends, row_offset, int(counts.sum()), cut, pooled)


# ---- output sinks ---------------------------------------------------------------------------
class _MemorySink:
    def __init__(self, hooks: list[str], n_rows: int, dims: dict[str, int], dtype) -> None:
        self.arrays = {h: np.empty((n_rows, dims[h]), dtype=dtype) for h in hooks}

    def write(self, hook: str, row: int, block: np.ndarray) -> None:
        self.arrays[hook][row : row + len(block)] = block

    def finish(self) -> dict[str, np.ndarray]:
        return self.arrays


class _DiskSink:
    """`.npy` files written with seek + write: the output never becomes resident memory."""

    def __init__(self, out_dir: Path, hooks: list[str], n_rows: int, dims: dict[str, int], dtype) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.out_dir, self.dtype = out_dir, np.dtype(dtype)
        self.files = {h: f"{h.replace('.', '_')}.npy" for h in hooks}
        self.handles, self.header, self.row_bytes = {}, {}, {}
        for h in hooks:
            handle = open(out_dir / self.files[h], "wb")
            np.lib.format.write_array_header_1_0(
                handle, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (n_rows, dims[h])}
            )
            self.header[h] = handle.tell()
            self.row_bytes[h] = dims[h] * self.dtype.itemsize
            handle.truncate(self.header[h] + n_rows * self.row_bytes[h])  # sparse until written
            self.handles[h] = handle

    def write(self, hook: str, row: int, block: np.ndarray) -> None:
        handle = self.handles[hook]
        handle.seek(self.header[hook] + row * self.row_bytes[hook])
        handle.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def finish(self) -> dict[str, np.ndarray]:
        self.close()
        return {h: np.load(self.out_dir / name, mmap_mode="r") for h, name in self.files.items()}


# ---- extraction -----------------------------------------------------------------------------
def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _hook_dims(model: GPT, hooks: list[str], stop: int | None, return_type: str | None) -> dict[str, int]:
    probe = torch.zeros(1, 1, dtype=torch.long, device=model.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(probe, names_filter=hooks, stop_at_layer=stop, return_type=return_type, return_cache_object=False)
    missing = [h for h in hooks if h not in cache]
    if missing:
        raise ValueError(
            f"hook points {missing} exist but did not fire in a forward pass; they sit behind a "
            "config switch (e.g. model.set_use_attn_result(True) for attn.hook_result)"
        )
    return {h: int(np.prod(cache[h].shape[2:])) for h in hooks}


def extract_activations(
    model: GPT,
    texts_or_tokens: LabelledTexts | Sequence[str] | torch.Tensor | Sequence[Sequence[int]],
    hooks: str | Sequence[str] = ("resid_post",),
    positions: PositionSpec | None = None,
    labels: Sequence[Any] | np.ndarray | None = None,
    batch_size: int = 64,
    device: Any = None,
    progress: bool = True,
    out_dir: str | Path | None = None,
    dtype: Any = np.float32,
    truncate: bool = False,
) -> Activations:
    """Run `model` over texts and keep the activations at `hooks` and `positions`.

    `texts_or_tokens`: a `LabelledTexts` (its labels and positions are used), a list of strings,
    a `[n, pos]` token tensor/array, or a list of token-id lists.
    `hooks`: full hook names (`blocks.1.hook_resid_post`) and/or per-block kinds (`resid_post`
    expands to every block). Only these are cached, and blocks after the deepest are skipped.
    `positions`: `'last'` (default; one row per text), `'mean'` (mean over the text), `'all'`
    (one row per token), an int (that token of every text, negative from the end), or one entry
    per text: an int, a `(start, end)` token span to average, or None (last token). For the
    char-level tokenizer token indices are character offsets.
    `labels`: one per text (overrides a LabelledTexts' labels); repeated per token with `'all'`.
    `out_dir`: write the arrays as `.npy` files there (batch by batch; returned memory-mapped).
    `truncate`: crop texts longer than the context to their last `block_size` tokens instead of
    raising. `device`: move the model there first (default: leave it where it is).
    """
    label_names = None
    if isinstance(texts_or_tokens, LabelledTexts):
        dataset = texts_or_tokens
        texts_or_tokens = dataset.texts
        labels = dataset.labels if labels is None else labels
        positions = dataset.positions if positions is None and dataset.positions is not None else positions
        label_names = dataset.label_names
    positions = "last" if positions is None else positions
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ids = _as_token_lists(model, texts_or_tokens)
    # Texts get the BOS token the model expects (as `to_tokens` and TransformerLens give them);
    # positions still index the text's own tokens, and the BOS position is never read.
    prefix = model.bos_tokens() if _is_text(texts_or_tokens) else []
    if not ids:
        raise ValueError("no texts given: the list is empty; pass at least one text (or token sequence)")
    n = len(ids)
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} texts; give exactly one label per text")
    hooks = resolve_hooks(model, hooks)
    if device is not None:
        model.to(device)
    spec = normalise_positions(positions, n)
    plan = _plan(model, ids, spec, truncate, reserved=len(prefix))
    vocab = model.config.vocab_size
    for i, t in enumerate(plan.ids):
        if min(t) < 0 or max(t) >= vocab:
            raise ValueError(f"text {i} holds token ids outside [0, {vocab}) (got {min(t)}..{max(t)}); were they made by another tokenizer?")

    stop = stop_layer(hooks)
    needs_logits = any(h.startswith(("ln_final", "unembed")) for h in hooks)
    return_type = "logits" if needs_logits else None
    was_training = model.training
    model.eval()
    dims = _hook_dims(model, hooks, stop, return_type)
    if out_dir is not None:
        out_dir = Path(out_dir)
        sink: _MemorySink | _DiskSink = _DiskSink(out_dir, hooks, plan.n_rows, dims, dtype)
    else:
        sink = _MemorySink(hooks, plan.n_rows, dims, dtype)

    lengths = np.array([len(t) for t in plan.ids])
    order = np.argsort(lengths, kind="stable")
    text_index = np.empty(plan.n_rows, dtype=np.int32)  # int32: rows metadata stays small beside the activations
    position = np.empty(plan.n_rows, dtype=np.int32)
    token = np.empty(plan.n_rows, dtype=np.int32)
    bar = None
    if progress:
        bar = tqdm(total=n, desc=f"activations ({len(hooks)} hooks)", unit="text", leave=False)
    try:
        with torch.inference_mode():
            for batch in _batches(order, lengths, batch_size):
                width = int(lengths[batch].max())
                tokens = torch.zeros((len(batch), len(prefix) + width), dtype=torch.long)
                tokens[:, : len(prefix)] = torch.as_tensor(prefix, dtype=torch.long)
                for row, i in enumerate(batch):
                    tokens[row, len(prefix) : len(prefix) + lengths[i]] = torch.as_tensor(plan.ids[i])
                _, cache = model.run_with_cache(
                    tokens.to(model.device), names_filter=hooks, stop_at_layer=stop,
                    return_type=return_type, return_cache_object=False,
                )
                for hook in hooks:
                    act = cache[hook]
                    act = act[:, len(prefix):].reshape(act.shape[0], act.shape[1] - len(prefix), -1).float().cpu().numpy()
                    for row, i in enumerate(batch):
                        s, e = plan.starts[i], plan.ends[i]
                        if plan.pooled[i]:
                            block = np.stack([act[row, a:b].mean(axis=0) for a, b in zip(s, e)])
                        elif len(s) == lengths[i]:  # 'all': every token
                            block = act[row, : lengths[i]]
                        elif (e - s == 1).all():
                            block = act[row, s]
                        else:
                            block = np.stack([act[row, a:b].mean(axis=0) for a, b in zip(s, e)])
                        sink.write(hook, int(plan.row_offset[i]), block)
                del cache
                for i in batch:
                    r0, s, e = int(plan.row_offset[i]), plan.starts[i], plan.ends[i]
                    rows = slice(r0, r0 + len(s))
                    text_index[rows] = i
                    single = np.full(len(s), not plan.pooled[i])
                    position[rows] = np.where(single, s + plan.cut[i], -1)
                    token[rows] = np.where(single, np.asarray(plan.ids[i])[np.minimum(s, lengths[i] - 1)], -1)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        if isinstance(sink, _DiskSink):
            sink.close()
        model.train(was_training)
    acts = sink.finish()

    row_labels = None
    if labels is not None:
        row_labels = labels[text_index]
    desc = positions if isinstance(positions, str) else ("index" if isinstance(positions, (int, np.integer)) else "per-text")
    info = {"hooks": hooks, "stop_at_layer": stop, "batch_size": batch_size, "truncated": int(sum(c > 0 for c in plan.cut))}
    result = Activations(acts, row_labels, text_index, position, token, desc, label_names, out_dir, info)
    if out_dir is not None:
        np.save(out_dir / "rows.npy", np.stack([text_index, position, token], axis=1))
        if row_labels is not None and row_labels.dtype != object:
            np.save(out_dir / "labels.npy", row_labels)
        meta = {"files": sink.files, "positions": desc, "label_names": label_names, "info": info}
        (out_dir / "activations.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return result
