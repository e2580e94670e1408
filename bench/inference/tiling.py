"""Overlapping tiles with a smooth blending window, so that a large photo fits a memory budget.

Why tiles can be invisible: the networks are convolutional, so a tile's prediction equals the
whole image's except within the receptive field of the tile's borders (zero padding there). Two
details make the interior match exactly rather than approximately:

- tiles start on a multiple of 4 and all but the last are a multiple of 4 long, because the U-Net
  halves the resolution twice (bilinear ×0.5 = 2×2 averaging): only shifts by multiples of 4
  commute with it;
- each output pixel is a weighted mean of the tiles covering it, with a window that is zero on a
  tile's inner border (the outer quarter of the overlap, where padding corrupts it most), rises
  as a raised cosine over the middle half of the overlap, and is one elsewhere. Two neighbours'
  windows then sum to one across an overlap, so nothing is rescaled and no hard seam is left.

Pixels covered by one tile only keep that tile's value bit for bit (weight 1 / sum 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALIGN = 4  # 2 ** (number of ×0.5 levels in the U-Net body)


@dataclass(frozen=True)
class Tile:
    """A window [y0, y1) × [x0, x1) of the image."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def area(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def aligned(overlap: int) -> int:
    """The overlap tiles really have: rounded up to a multiple of 4, since steps are."""
    return -(-overlap // ALIGN) * ALIGN


def _spans(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) along one axis: the fewest tiles of at most ``tile`` px, spread evenly.

    Steps are multiples of 4 and neighbours overlap by ``overlap`` rounded up to a multiple of 4;
    the last span ends at the image edge. Spreading evenly (rather than a fixed stride with a
    last tile pushed back against the edge) keeps the extra work of the overlaps small.
    """
    if n <= tile:
        return [(0, n)]
    ov = aligned(overlap)
    count = -(-(n - tile) // (tile - ov)) + 1
    while True:
        step = -(-(n - ov) // (count * ALIGN)) * ALIGN
        if step + ov <= tile or step <= ALIGN:
            break
        count += 1
    return [(i * step, min(i * step + step + ov, n)) for i in range(count)]


def check(tile: int, overlap: int) -> None:
    """Raise ValueError unless tiles of ``tile`` px can overlap by ``overlap`` (0 = no tiling)."""
    if tile < 0:
        raise ValueError(f"tile {tile} px: expected 0 (no tiling) or a positive size")
    if overlap < 0:
        raise ValueError(f"overlap {overlap} px: expected 0 or more")
    if tile and 2 * aligned(overlap) > tile // ALIGN * ALIGN - ALIGN:
        raise ValueError(f"expected tile ≥ 2 × overlap + 4 px (overlap rounded up to a multiple of 4), "
                         f"e.g. --tile {2 * aligned(overlap) + ALIGN} for --overlap {overlap}")


def plan(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile`` px (rounded down to a multiple of 4) overlapping by ``overlap``.

    ``tile <= 0`` or a tile at least as large as the image gives one tile: the whole image.
    """
    check(tile, overlap)
    if tile <= 0 or (height <= tile and width <= tile):
        return [Tile(0, height, 0, width)]
    tile = tile // ALIGN * ALIGN
    return [Tile(y0, y1, x0, x1) for y0, y1 in _spans(height, tile, overlap) for x0, x1 in _spans(width, tile, overlap)]


def _ramp(length: int, before: bool, after: bool, overlap: int) -> Tensor:
    """1-D window: 0 over the first overlap/4 px from a shared edge, raised cosine, then 1."""
    w = torch.ones(length, dtype=torch.float32)
    if overlap <= 0:
        return w
    d = torch.arange(length, dtype=torch.float64) + 0.5  # distance of pixel centres from the edge
    t = ((d - overlap / 4) / (overlap / 2)).clamp(0, 1)
    ramp = torch.sin(t * (math.pi / 2)) ** 2
    if before:
        w = w * ramp.float()
    if after:
        w = w * ramp.flip(0).float()
    return w


def window(tile: Tile, height: int, width: int, overlap: int) -> Tensor:
    """(h, w) blending weights of one tile; no ramp on sides that lie on the image border."""
    ov = aligned(overlap)
    wy = _ramp(tile.y1 - tile.y0, tile.y0 > 0, tile.y1 < height, ov)
    wx = _ramp(tile.x1 - tile.x0, tile.x0 > 0, tile.x1 < width, ov)
    return wy[:, None] * wx[None, :]


class Blender:
    """Accumulates weighted tile predictions (C, h, w) into one (C, H, W) image on the CPU.

    ``weights(tile)`` are the windows divided by their sum over all tiles, so they add up to one at
    every pixel: the joint adaptation uses them to count each pixel once in its loss.
    """

    def __init__(self, height: int, width: int, tiles: list[Tile], overlap: int) -> None:
        self.height, self.width, self.tiles, self.overlap = height, width, tiles, overlap
        self.windows = [window(t, height, width, overlap) for t in tiles]
        self.total = torch.zeros(height, width)
        for t, w in zip(tiles, self.windows):
            self.total[t.slices] += w
        if bool((self.total <= 0).any()):
            raise ValueError("tiles leave pixels without weight; use a larger overlap or tile")
        self._sums: dict[str, Tensor] = {}

    def weights(self, index: int) -> Tensor:
        t = self.tiles[index]
        return self.windows[index] / self.total[t.slices]

    def add(self, key: str, index: int, pred: Tensor) -> None:
        """Add tile ``index``'s prediction (C, h, w) (or (1, C, h, w)) to the image named ``key``."""
        pred = pred.detach().float().cpu().reshape(-1, *pred.shape[-2:])
        if key not in self._sums:
            self._sums[key] = torch.zeros(pred.shape[0], self.height, self.width)
        t = self.tiles[index]
        self._sums[key][(slice(None), *t.slices)] += pred * self.windows[index]

    def keys(self) -> list[str]:
        return list(self._sums)

    def result(self, key: str) -> Tensor:
        """The blended (C, H, W) image; frees its accumulator."""
        return self._sums.pop(key) / self.total


# Peak working memory per pixel of one tile (CPU, float32): the growth of VmHWM over one call,
# fitted between 256² and 512² inputs (ours K=5: 2,325 B/px; K=0: 1,150; chi K=5: 2,420; RIDNet
# 2,890 at 256²; MIRNet 4,820 at 192²), rounded up. The budget divides by these to size tiles.
BYTES_PER_PIXEL: dict[tuple[str, bool], float] = {
    ("ours", True): 2600.0, ("ours", False): 1300.0,
    ("chi", True): 2800.0, ("chi", False): 1300.0,
    ("ridnet", False): 3000.0, ("mirnet", False): 5500.0,
}


def bytes_per_pixel(arch: str, adapting: bool) -> float:
    """Peak working memory per pixel of an architecture, with or without adaptation (an unknown one: the largest)."""
    return BYTES_PER_PIXEL.get((arch, adapting), max(BYTES_PER_PIXEL.values()))


def auto_tile(height: int, width: int, bytes_per_px: float, budget_bytes: float, overlap: int) -> int:
    """0 (the whole image) when it fits the budget, else the largest tile that does."""
    if height * width * bytes_per_px <= budget_bytes:
        return 0
    return tile_for_budget(budget_bytes, bytes_per_px, overlap)


def tile_for_budget(budget_bytes: float, bytes_per_pixel: float, overlap: int, minimum: int = 128) -> int:
    """The largest aligned square tile whose estimated peak memory fits the budget (≥ ``minimum``)."""
    side = int(math.sqrt(max(budget_bytes, 0) / bytes_per_pixel)) // ALIGN * ALIGN
    return max(side, minimum, 2 * aligned(overlap) + ALIGN)
