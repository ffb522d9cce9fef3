"""Incremental decoding state: per-layer self-attention K/V and the projected encoder memory."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

KV = tuple[Tensor, Tensor]  # keys, values: each (batch, n_heads, len, head_dim)
# what a join gives cross-attention: cross_kv, src_mask, cross_rows
Cross = tuple[list[KV], Tensor, Tensor | None]


@dataclass
class DecoderCache:
    """Incremental decoding state for `Transformer.decode_step`.

    Rows are sentences (greedy) or sentence-major beams: with `beam` > 1, rows
    g*beam .. g*beam + beam - 1 all decode sentence g. `self_kv[i]` holds layer i's
    keys/values of the positions fed so far, one per row, each (rows, n_heads, position,
    head_dim); `cross_kv[i]` the encoder memory projected once, one per *sentence*, each
    (rows / beam, n_heads, src_len, head_dim). Beam bookkeeping therefore never copies the
    cross-attention K/V: only dropping finished sentences does.

    Sentences may join a running search (`join`, continuous batching): then `start` holds the
    column at which each sentence's first token was fed. Its self-attention ignores the columns
    before it, and its positions count from it; `select` drops the columns no sentence needs.

    A step writes its keys/values into a free last column (`reserve`) instead of concatenating:
    `select`, which beam search calls after every step, gathers the rows into buffers that keep
    one such column, so a beam step copies the self-attention K/V once, not twice.

    Back-pointers (`origin` set; when the model's attention reads keys through them, see
    Transformer.init_cache): then no step copies the self-attention K/V at all. The buffers
    have room for more rows and columns than are used; row r writes column c's key/value into
    buffer row r, and `origin[r, c]` says which buffer row holds row r's column c. `select`
    only gathers `origin` (rows x columns integers instead of the keys and values of every
    layer); buffers grow, doubling, when a step needs a row or column they lack. The
    cross-attention K/V are not copied either when sentences finish: `cross_rows` says which
    row of them each sentence reads, and a join writes the new sentences' memories into the
    rows past the last one read (the pool grows by doubling; when it must grow and half of
    the rows up to the last one read or more are no longer read, only the read ones move).

    Before its first step a sentence's `beam` beams are the same prefix: the last `single`
    sentences then have one row each (`as_single`), and the `select` after the step gives them
    `beam`. A step with both kinds (sentences that join a running search) needs the pooled
    cross-attention memories (`cross_rows`): its cross-attention reads them row by row.
    """

    self_kv: list[KV]
    cross_kv: list[KV]
    src_mask: Tensor  # (rows / beam, src_len) bool
    position: int  # index of the next target position to be fed
    beam: int = 1  # rows per sentence
    start: Tensor | None = None  # (rows / beam,) long: first column of each sentence; None: all 0
    origin: Tensor | None = None  # (rows, position) long back-pointers; None: row r in row r
    cross_rows: Tensor | None = None  # (rows / beam,) long: each sentence's cross_kv row; None: s
    single: int = 0  # the last `single` sentences have one row each (before their first step)

    def repeat(self, beam: int) -> DecoderCache:
        """Each row repeated `beam` times (sentence-major); sentence-level tensors are shared.

        Shapes: rows -> rows * beam.
        """
        if self.single:
            raise ValueError("a cache with one-row sentences is spread by `select`")
        index = torch.arange(self.rows, device=self.src_mask.device).repeat_interleave(beam)
        if self.origin is not None:
            return replace(self, origin=self.origin[index], beam=self.beam * beam)
        return DecoderCache(
            self_kv=self._gathered(index, 0),
            cross_kv=self.cross_kv,
            src_mask=self.src_mask,
            position=self.position,
            beam=self.beam * beam,
            start=self.start,
        )

    @property
    def rows(self) -> int:
        return (int(self.src_mask.size(0)) - self.single) * self.beam + self.single

    def as_single(self, beam: int) -> DecoderCache:
        """This cache of one row a sentence (nothing fed yet) as sentences that get `beam`
        rows after their first step (see the class doc)."""
        if self.beam != 1 or self.position != 0:
            raise ValueError("only a fresh cache of one row a sentence can start single")
        return replace(self, beam=beam, single=int(self.src_mask.size(0)))

    def row_sentences(self) -> Tensor:
        """The sentence each row decodes. Shapes: -> (rows,) long."""
        sentences = int(self.src_mask.size(0))
        index = self._arange(sentences)
        settled = sentences - self.single
        if not self.single:
            return index.repeat_interleave(self.beam)  # (rows,)
        return torch.cat([index[:settled].repeat_interleave(self.beam), index[settled:]])

    def _per_row(self, x: Tensor) -> Tensor:
        """A per-sentence tensor, one entry per row. Shapes: (sentences, ...) -> (rows, ...)."""
        if not self.single:
            return x.repeat_interleave(self.beam, dim=0)
        return x.index_select(0, self.row_sentences())

    def select(self, index: Tensor) -> DecoderCache:
        """Rows `index` of the cache: reorders beams, drops finished sentences, repeats rows.

        With `beam` > 1 the new rows must again come in whole groups, each from one sentence
        (beam search's sentence-major order); then a sentence's memory is kept or dropped as
        one, and not copied at all while no sentence leaves. Columns before the earliest start
        of the sentences kept are dropped; the new self-attention K/V have a free last column.
        Shapes: index (new_rows,) long -> cache with new_rows rows.
        """
        if self.single:  # every sentence leaves with `beam` rows
            sentences = self.row_sentences().index_select(0, index)[:: self.beam]  # (new_sent,)
        else:
            sentences = index if self.beam == 1 else index[:: self.beam] // self.beam
        same = sentences.numel() == self.src_mask.size(0) and bool(
            (sentences == torch.arange(sentences.numel(), device=sentences.device)).all()
        )
        start = self.start if same or self.start is None else self.start[sentences]
        first = int(start.min()) if start is not None and start.numel() else 0
        if start is not None:
            start = start - first if bool((start > first).any()) else None

        def pick(kv: KV, rows: Tensor) -> KV:
            return kv[0].index_select(0, rows), kv[1].index_select(0, rows)

        origin = None if self.origin is None else self.origin.index_select(0, index)[:, first:]
        if origin is None:
            self_kv = self._gathered(index, first)
        else:  # the buffers stay; their columns before `first` are no longer seen
            self_kv = [(k[:, :, first:], v[:, :, first:]) for k, v in self.self_kv]
        cross_kv, cross_rows = self.cross_kv, self.cross_rows
        if not same and cross_rows is not None:  # the memories stay; the sentences' rows move
            cross_rows = cross_rows.index_select(0, sentences)
        elif not same:
            cross_kv = [pick(kv, sentences) for kv in self.cross_kv]
        return DecoderCache(
            self_kv=self_kv,
            cross_kv=cross_kv,
            src_mask=self.src_mask if same else self.src_mask.index_select(0, sentences),
            position=self.position - first,
            beam=self.beam,
            start=start,
            origin=origin,
            cross_rows=cross_rows,
        )

    def cross_table(self) -> Tensor | None:
        """Which cross_kv row each sentence's cross-attention reads, per source column (the
        back-pointer table the attention takes), or None: sentence s reads row s.

        Shapes: -> (rows / beam, src_len) long, a broadcast view.
        """
        if self.cross_rows is None:
            return None
        return self.cross_rows[:, None].expand(-1, self.src_mask.size(1))  # (sentences, src_len)

    def cross_view(self) -> tuple[Tensor, Tensor | None, int]:
        """What a step's cross-attention reads: the source mask and back-pointer table
        (`cross_table`) of each group of consecutive rows, and the rows a group has: a
        sentence's `beam` rows, or one row each in a step where some sentences have one.

        Shapes: -> mask (groups, src_len) bool, table None or (groups, src_len) long, int.
        """
        sentences = int(self.src_mask.size(0))
        if not self.single or self.single == sentences:
            return self.src_mask, self.cross_table(), 1 if self.single else self.beam
        if self.cross_rows is None:
            raise ValueError("one-row and beam-row sentences in one step need pooled memories")
        rows = self.row_sentences()  # (rows,)
        table = self.cross_rows.index_select(0, rows)[:, None].expand(-1, self.src_mask.size(1))
        return self.src_mask.index_select(0, rows), table, 1  # (rows, src_len) each

    def _gathered(self, rows: Tensor, first: int) -> list[KV]:
        """Self-attention K/V of `rows`, columns from `first`, each with a free last column."""
        used = self.position
        return [(_gather(k, rows, first, used), _gather(v, rows, first, used))
                for k, v in self.self_kv]  # fmt: skip

    def reserve(self) -> None:
        """Make sure every layer's self-attention K/V has a free column for the next position
        (a copy only where `select` did not leave one). Shapes: (.., position + 1, ..).

        With back-pointers: buffers with at least `rows` rows and position + 1 columns (grown,
        doubling, when short), and `origin` gets the new column: row r's is in buffer row r.
        """
        if self.origin is None:
            self.self_kv = [(_with_room(k, self.position), _with_room(v, self.position))
                            for k, v in self.self_kv]  # fmt: skip
            return
        rows = self.rows
        need, used = self.position + 1, self.position
        self.self_kv = [(_with_capacity(k, rows, need, used), _with_capacity(v, rows, need, used))
                        for k, v in self.self_kv]  # fmt: skip
        own = torch.arange(rows, device=self.origin.device)[:, None]  # (rows, 1)
        self.origin = torch.cat([self.origin, own], dim=1)  # (rows, position + 1)

    def row_positions(self) -> Tensor:
        """Position of the token fed next in each row, counted from its sentence's start.

        Shapes: -> (rows,) long.
        """
        position = torch.full((self.rows,), self.position, device=self.src_mask.device)
        if self.start is None:
            return position  # (rows,)
        return position - self._per_row(self.start)  # (rows,)

    def self_mask(self) -> Tensor | None:
        """Which self-attention columns (those cached and the one fed next) each row may attend
        to: its sentence's own. None while every sentence started at column 0.

        Shapes: -> (rows, 1, 1, position + 1) bool.
        """
        if self.start is None:
            return None
        columns = torch.arange(self.position + 1, device=self.start.device)  # (position + 1,)
        own = columns[None, :] >= self._per_row(self.start)[:, None]
        return own[:, None, None, :]  # (rows, 1, 1, position + 1)

    def join(self, fresh: DecoderCache) -> DecoderCache:
        """This cache's sentences, then `fresh`'s (nothing fed yet, same beam), which start at
        the next column. Cross-attention memories are padded to a common source length (first
        trimmed to the longest source still here). `fresh` may be single (`as_single`): its
        sentences then keep one row each until their first step (this cache's one-row
        sentences must be last, and a step mixing them with beam rows needs `cross_rows`).

        Shapes: rows + fresh.rows rows; self K/V (.., position + 1, ..), the last column free.
        """
        if fresh.position != 0 or fresh.beam != self.beam:
            raise ValueError("only a fresh cache with the same beam can join")
        if fresh.single not in (0, fresh.src_mask.size(0)) or (self.single and not fresh.single):
            raise ValueError("one-row sentences must come after those with beam rows")

        def grow(old: Tensor) -> Tensor:  # fresh rows: zeros before their start; a free column
            rows, heads, _, head_dim = old.shape
            out = old.new_empty(rows + fresh.rows, heads, self.position + 1, head_dim)
            out[:rows, :, : self.position] = old[:, :, : self.position]
            out[rows:].zero_()
            return out

        start = self.start if self.start is not None else self._zeros(self.src_mask.size(0))
        joined = torch.full((fresh.src_mask.size(0),), self.position, device=start.device)
        origin = None
        if self.origin is not None:  # fresh rows read their (masked, weight 0) columns from row 0's
            borrowed = self.origin[:1].expand(fresh.rows, -1)  # written, so finite, keys/values
            origin = torch.cat([self.origin, borrowed])  # (rows + fresh.rows, position)
        joint = self._pooled_cross(fresh) if self.cross_rows is not None else self._stacked(fresh)
        cross_kv, src_mask, cross_rows = joint
        return DecoderCache(
            self_kv=self.self_kv
            if origin is not None
            else [(grow(k), grow(v)) for k, v in self.self_kv],
            cross_kv=cross_kv,
            src_mask=src_mask,
            position=self.position,
            beam=self.beam,
            start=torch.cat([start, joined]) if self.position > 0 else self.start,
            origin=origin,
            cross_rows=cross_rows,
            single=self.single + fresh.single,
        )

    def _stacked(self, fresh: DecoderCache) -> Cross:
        """`join`'s cross-attention fields when each sentence reads its own row: the memories
        and masks stacked, padded to a common source length (first trimmed to the longest
        source still here)."""
        width = max(int(self.src_mask.sum(dim=1).max()), int(fresh.src_mask.shape[1]))

        def stack(old: Tensor, new: Tensor, dim: int) -> Tensor:
            old = old.narrow(dim, 0, min(width, old.size(dim)))
            return torch.cat([_pad_to(old, dim, width), _pad_to(new, dim, width)])

        cross_kv = [(stack(kv[0], new[0], 2), stack(kv[1], new[1], 2))
                    for kv, new in zip(self.cross_kv, fresh.cross_kv, strict=True)]  # fmt: skip
        return cross_kv, stack(self.src_mask, fresh.src_mask, 1), None

    def _pooled_cross(self, fresh: DecoderCache) -> Cross:
        """`join`'s cross-attention fields when sentences read their memories through
        `cross_rows`: `fresh`'s memories go into the pool's rows past the last one read (rows no
        sentence reads any more are free). When it lacks rows or width (a longer source; widths
        go up in steps of 8 and never down, the masks hide the padding), it is reallocated with
        room for as many rows again, and only the read rows move if they are half of those up
        to the last one read, or fewer.
        Shapes: pool (>= used rows, n_heads, width, head_dim); src_mask (sentences, width).
        """
        assert self.cross_rows is not None
        rows, pool, src_mask = self.cross_rows, self.cross_kv, self.src_mask
        new, live = int(fresh.src_mask.size(0)), rows.numel()
        used = int(rows.max()) + 1 if live else 0  # rows up to the last one read
        capacity, width = int(pool[0][0].size(0)), int(pool[0][0].size(2))
        if used + new > capacity or fresh.src_mask.size(1) > width:
            compact = 2 * live <= used  # half of them or more: finished sentences' memories
            keep, moving = (live, rows) if compact else (used, None)
            size, width = 2 * (keep + new), max(width, -(-int(fresh.src_mask.size(1)) // 8) * 8)
            pool = [(_moved(k, moving, keep, size, width), _moved(v, moving, keep, size, width))
                    for k, v in pool]  # fmt: skip
            if compact:
                rows, used = self._arange(live), live
        for (k, v), (fresh_k, fresh_v) in zip(pool, fresh.cross_kv, strict=True):
            for out, memory in ((k, fresh_k), (v, fresh_v)):
                out[used : used + new, :, : memory.size(2)] = memory
                out[used : used + new, :, memory.size(2) :] = 0  # masked; finite for PyTorch's
        src_mask = torch.cat([_pad_to(src_mask, 1, width), _pad_to(fresh.src_mask, 1, width)])
        rows = torch.cat([rows, torch.arange(used, used + new, device=rows.device)])
        return pool, src_mask, rows

    def _arange(self, n: int) -> Tensor:
        return torch.arange(n, device=self.src_mask.device)

    def _zeros(self, n: int) -> Tensor:
        return torch.zeros(n, dtype=torch.long, device=self.src_mask.device)


def _pad_to(x: Tensor, dim: int, size: int) -> Tensor:
    """`x` with zeros (False for bool) appended along `dim` up to `size`."""
    missing = size - x.size(dim)
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


def _moved(x: Tensor, rows: Tensor | None, keep: int, size: int, width: int) -> Tensor:
    """A (size, heads, width, head_dim) buffer whose first `keep` rows hold `x`'s rows `rows`
    (None: its first `keep`), zero-padded to `width`; the other rows are not initialised."""
    out = x.new_empty(size, x.size(1), width, x.size(3))
    out[:keep, :, : x.size(2)] = x[:keep] if rows is None else x.index_select(0, rows)
    out[:keep, :, x.size(2) :] = 0
    return out


def _gather(x: Tensor, rows: Tensor, first: int, used: int) -> Tensor:
    """Rows `rows` of columns first .. used - 1 of `x`, in a new buffer with one more (free)
    column. Shapes: (rows_in, heads, >= used, head_dim) -> (rows, heads, used - first + 1, ..)."""
    out = x.new_empty(rows.numel(), x.size(1), used - first + 1, x.size(3))
    filled = out[:, :, : used - first]  # a strided view of `out`
    if x.device.type == "cpu":  # writes through the view: one copy
        torch.index_select(x[:, :, first:used], 0, rows, out=filled)
    else:  # elsewhere not relied on: gather, then copy
        filled.copy_(x[:, :, first:used].index_select(0, rows))
    return out


def pointer_buffer(like: Tensor, rows: int, heads: int, width: int, head_dim: int) -> Tensor:
    """An uninitialised back-pointer buffer, column-major: a step's new column of every row is
    one contiguous block, and the pages of columns no step writes are never touched.
    Shapes: -> (rows, heads, width, head_dim), a view of (width, rows, heads, head_dim)."""
    return like.new_empty(width, rows, heads, head_dim).permute(1, 2, 0, 3)


def _with_capacity(x: Tensor, rows: int, columns: int, used: int) -> Tensor:
    """`x`, or a new buffer (`pointer_buffer`) with `x`'s first `used` columns copied into its
    corner that has at least `rows` rows and `columns` columns (each doubled when it grows:
    buffers grow O(log) times in a search). The rest is not initialised: every back-pointer
    names a written key/value (DecoderCache.join).
    Shapes: (buffer_rows, n_heads, width, head_dim) -> (>= rows, n_heads, >= columns, ..)."""
    have_rows, heads, width, head_dim = x.shape
    if have_rows >= rows and width >= columns:
        return x
    new_rows = have_rows if have_rows >= rows else max(rows, 2 * have_rows)
    new_width = width if width >= columns else max(columns, 2 * width, 8)
    out = pointer_buffer(x, new_rows, heads, new_width, head_dim)
    out[:have_rows, :, :used] = x[:, :, :used]
    return out


def _with_room(x: Tensor, used: int) -> Tensor:
    """`x` if it has a column past the `used` ones, else `x` with a zero column appended."""
    return x if x.size(2) > used else _pad_to(x, 2, used + 1)
