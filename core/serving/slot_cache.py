"""A static KV cache with one slot (row) per request, each slot holding its own sequence from column 0.

transformers' StaticCache writes every row at the same positions, which continuous batching cannot use:
here each row writes at its own positions (``write_pos``), so a request that joins mid-flight starts at
column 0 of a free slot and nobody else's row moves. The model sees this object as its cache through
``update``, the one method its attention layers call. Shapes: keys and values per layer are
(max_batch, kv_heads, max_len + 1, head_dim); the last column is scratch space where prefill padding
writes, never attended.

Before each forward the engine says what the forward is:
- prefill (``for_prefill``): rows = the slots being filled, write_pos (rows, q) = each token's column;
  attention uses the fresh keys of the prompt itself, so it returns them unchanged.
- decode (``for_decode``): rows 0..b-1, one token each; attention reads columns 0..kv_len-1 of those rows.
"""

from __future__ import annotations

from typing import Any


class SlotCache:
    def __init__(self, max_batch: int, max_len: int):
        self.max_batch = max_batch
        self.max_len = max_len
        self.keys: list[Any] = []  # per layer, allocated by the first forward (dtype and heads from the model)
        self.values: list[Any] = []
        self._rows: Any = None  # (n, 1) slot index per row of the forward
        self._write_pos: Any = None  # (n, q) cache column per token
        self._decode_rows = 0  # > 0: a decode over rows 0..n-1, returning kv_len columns
        self._kv_len = 0

    @property
    def scratch_column(self) -> int:
        return self.max_len

    def for_prefill(self, rows: Any, write_pos: Any) -> None:
        self._rows, self._write_pos, self._decode_rows, self._kv_len = rows, write_pos, 0, 0

    def for_decode(self, rows: Any, write_pos: Any, kv_len: int) -> None:
        self._rows, self._write_pos = rows, write_pos
        self._decode_rows, self._kv_len = rows.shape[0], kv_len

    def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
        """Write this forward's keys and values into their slots; return what attention should read."""
        if layer_idx == len(self.keys):
            self._allocate(key_states, value_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        # Advanced indices (rows, write_pos) around a slice put their dims first: (n, q, heads, dim).
        keys[self._rows, :, self._write_pos] = key_states.transpose(1, 2)
        values[self._rows, :, self._write_pos] = value_states.transpose(1, 2)
        if not self._decode_rows:
            return key_states, value_states
        n, kv_len = self._decode_rows, self._kv_len
        return keys[:n, :, :kv_len], values[:n, :, :kv_len]

    def move(self, src: int, dst: int, length: int) -> None:
        """Copy slot ``src``'s first ``length`` columns to slot ``dst`` (compaction after requests leave)."""
        for keys, values in zip(self.keys, self.values, strict=True):
            keys[dst, :, :length] = keys[src, :, :length]
            values[dst, :, :length] = values[src, :, :length]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))

    def _allocate(self, key_states: Any, value_states: Any) -> None:
        import torch

        _, heads, _, k_dim = key_states.shape
        v_dim = value_states.shape[-1]
        shape = (self.max_batch, heads, self.max_len + 1)
        keys = torch.zeros(*shape, k_dim, dtype=key_states.dtype, device=key_states.device)
        values = torch.zeros(*shape, v_dim, dtype=value_states.dtype, device=value_states.device)
        # Fixed addresses: compiled code and CUDA graphs may treat them as constants.
        torch._dynamo.mark_static_address(keys)
        torch._dynamo.mark_static_address(values)
        self.keys.append(keys)
        self.values.append(values)
