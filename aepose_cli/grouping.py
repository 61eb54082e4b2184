"""From aggregated maps to people, exactly as the reference's `HeatmapParser`
(mmpose 0.29, mmpose/core/post_processing/group.py).

Stages: peak NMS and top-k per joint (`top_k`), tag matching with the munkres-identical solver
(`match_by_tag`), quarter-pixel `adjust`, person scores, `refine` (fill missing joints) and the
mapping back to original-image pixels (`to_image_coords`).

With UDP (`InferenceConfig.use_udp`, the `*_udp` models) the maps are at the network's heatmap
resolution, adjust is one DARK Newton step on every joint (`adjust_udp`), refine adds no +0.5
and the mapping back is `udp.udp_to_image_coords`. Refine then reads the real heatmaps, as the
reference does on a GPU, where the published results were made; on a CPU the reference's DARK
step leaves its log-maps in the heatmaps' memory and refine reads those (docs/fidelity.md).

The reference refines one person at a time, scanning every joint's full-size map per person.
Here refine is vectorised over persons and joints and runs where the maps live (CPU or CUDA);
the comparisons and float32 arithmetic are the reference's, so results are identical.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .assignment import solve_assignment
from .config import InferenceConfig
from .keypoints import KeypointSet
from .preprocess import ImageGeometry
from .types import AggregatedMaps, Pose
from .udp import UdpGeometry, dark_udp_adjust, dark_udp_log_maps, udp_to_image_coords

NMS_KERNEL = 5
NMS_PADDING = 2
UNMATCHED_COST = 1e10


@dataclass
class Candidates:
    """Top-k peaks of every joint map (numpy, as the reference hands them to matching)."""

    val: np.ndarray  # [K, k] float32, descending
    loc: np.ndarray  # [K, k, 2] int64 (x, y)
    tag: np.ndarray  # [K, k, L] float32


@dataclass
class Grouped:
    """People on the base canvas: rows (x, y, val, tag_1..tag_L) per joint, and their scores."""

    joints: np.ndarray  # [P, K, 3 + L] float32
    scores: np.ndarray  # [P] float32


def peak_nms(heatmaps: torch.Tensor) -> torch.Tensor:
    """Keep only pixels equal to their 5x5 maximum (plateaus survive), zero elsewhere.

    The 5x5 maximum is taken as a 1x5 then a 5x1 maximum: max is exact in any grouping, so
    this equals the reference's MaxPool2d(5, 1, 2) bit for bit, at a fraction of its cost.
    """
    k, h, w = heatmaps.shape
    rows = F.max_pool1d(heatmaps.reshape(k * h, 1, w), NMS_KERNEL, 1, NMS_PADDING).reshape(k, h, w)
    pooled = rows.clone()
    for shift in range(1, NMS_PADDING + 1):  # rows i-2 .. i+2, in place (no padded copies)
        torch.maximum(pooled[:, shift:], rows[:, :-shift], out=pooled[:, shift:])
        torch.maximum(pooled[:, :-shift], rows[:, shift:], out=pooled[:, :-shift])
    # mask * heat == heat * mask exactly (suppressed negatives stay -0.0, as in the reference).
    return pooled.eq_(heatmaps).mul_(heatmaps)


def top_k(heatmaps: torch.Tensor, tags: torch.Tensor, k: int) -> Candidates:
    """`k` best peaks per joint with their locations and tags.

    `torch.topk` runs on the CPU whatever the device: on flat map borders its tie order is the
    reference's, and CUDA's differs.
    """
    num_joints, h, w = heatmaps.shape
    suppressed = peak_nms(heatmaps).reshape(num_joints, h * w).cpu()
    val, ind = suppressed.topk(min(k, h * w), dim=1)
    flat_tags = tags.reshape(num_joints, h * w, -1)
    tag = torch.gather(flat_tags, 1, ind.to(flat_tags.device)[..., None].expand(-1, -1, flat_tags.shape[-1]))
    loc = torch.stack((ind % w, ind // w), dim=2)
    return Candidates(val.numpy(), loc.numpy(), tag.cpu().numpy())


def match_by_tag(cands: Candidates, keypoints: KeypointSet, config: InferenceConfig) -> np.ndarray:
    """Greedy joint-by-joint matching of candidates to people by tag distance (`_match_by_tag`).

    People are keyed by the float value of their seed tag's first component, as in the
    reference (two seeds with the same value collide; that is reproduced on purpose).
    """
    num_joints = keypoints.num_joints
    tag_dim = cands.tag.shape[2]
    people: dict[float, np.ndarray] = {}
    people_tags: dict[float, list[np.ndarray]] = {}
    mean_cache: dict[float, np.ndarray] = {}

    def new_person(key: float, joint: int, row: np.ndarray, tag: np.ndarray) -> None:
        if key not in people:
            people[key] = np.zeros((num_joints, 3 + tag_dim), dtype=np.float32)
        people[key][joint] = row
        people_tags[key] = [tag]
        mean_cache.pop(key, None)

    for i, joint in enumerate(keypoints.grouping_order):
        tags = cands.tag[joint]
        rows = np.concatenate((cands.loc[joint], cands.val[joint, :, None], tags), axis=1)
        keep = rows[:, 2] > config.detection_threshold
        tags, rows = tags[keep], rows[keep]
        if rows.shape[0] == 0:
            continue
        if i == 0 or not people:
            for tag, row in zip(tags, rows):
                new_person(float(tag[0]), joint, row, tag)
            continue
        keys = list(people)
        means = []
        for key in keys:
            if key not in mean_cache:
                mean_cache[key] = np.mean(people_tags[key], axis=0)
            means.append(mean_cache[key])
        diff = rows[:, None, 3:] - np.array(means)[None, :, :]
        dist = np.linalg.norm(diff, ord=2, axis=2)
        cost = np.round(dist) * 100 - rows[:, 2:3]
        n_rows, n_groups = dist.shape
        if n_rows > n_groups:
            padding = np.zeros((n_rows, n_rows - n_groups), dtype=np.float32) + UNMATCHED_COST
            cost = np.concatenate((cost, padding), axis=1)
        for r, c in solve_assignment(cost):
            if r < n_rows and c < n_groups and dist[r, c] < config.tag_threshold:
                key = keys[c]
                people[key][joint] = rows[r]
                people_tags[key].append(tags[r])
                mean_cache.pop(key, None)
            else:
                new_person(float(tags[r][0]), joint, rows[r], tags[r])
    if not people:
        return np.zeros((0, num_joints, 3 + tag_dim), dtype=np.float32)
    return np.array(list(people.values()), dtype=np.float32)


def _quarter_offsets(heatmaps: torch.Tensor, joint: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """+0.25 towards the larger neighbour (strict >, ties go to -0.25), per axis."""
    _, h, w = heatmaps.shape
    right = heatmaps[joint, y, torch.clamp(x + 1, max=w - 1)]
    left = heatmaps[joint, y, torch.clamp(x - 1, min=0)]
    down = heatmaps[joint, torch.clamp(y + 1, max=h - 1), x]
    up = heatmaps[joint, torch.clamp(y - 1, min=0), x]
    dx = torch.where(right > left, 0.25, -0.25)
    dy = torch.where(down > up, 0.25, -0.25)
    return dx, dy


def adjust(joints: np.ndarray, heatmaps: torch.Tensor) -> np.ndarray:
    """Move every assigned joint a quarter pixel towards its higher neighbour, then +0.5."""
    people, joint_ids = np.nonzero(joints[:, :, 2] > 0)
    if people.size == 0:
        return joints
    device = heatmaps.device
    x = torch.from_numpy(joints[people, joint_ids, 0].astype(np.int64)).to(device)
    y = torch.from_numpy(joints[people, joint_ids, 1].astype(np.int64)).to(device)
    dx, dy = _quarter_offsets(heatmaps, torch.from_numpy(joint_ids).to(device), x, y)
    joints[people, joint_ids, 0] = (x.cpu().numpy() + dx.cpu().numpy() + 0.5).astype(np.float32)
    joints[people, joint_ids, 1] = (y.cpu().numpy() + dy.cpu().numpy() + 0.5).astype(np.float32)
    return joints


def adjust_udp(joints: np.ndarray, heatmaps: torch.Tensor) -> np.ndarray:
    """UDP's adjust (`post_dark_udp`): every joint of every person, detected or not, one Newton
    step towards the peak of its log-heatmap (blurred, clipped, log); scores unchanged."""
    if joints.shape[0] == 0:
        return joints
    joints[..., :2] = dark_udp_adjust(joints[..., :2], dark_udp_log_maps(heatmaps.cpu().numpy()))
    return joints


def person_scores(joints: np.ndarray) -> np.ndarray:
    """Mean heatmap value over all K joints (missing = 0), float32 as numpy computes it."""
    return np.array([joints[p, :, 2].mean() for p in range(joints.shape[0])], dtype=np.float32)


REFINE_TILE = 8


def _mean_tags(joints: np.ndarray, tags: torch.Tensor) -> np.ndarray:
    """Each person's mean tag over its detected joints, float32 as numpy's mean gives it."""
    _, h, w, tag_dim = tags.shape
    people, joint_ids = np.nonzero(joints[:, :, 2] > 0)
    xs = np.clip(joints[people, joint_ids, 0].astype(np.int64), 0, w - 1)
    ys = np.clip(joints[people, joint_ids, 1].astype(np.int64), 0, h - 1)
    index = [torch.from_numpy(a).to(tags.device) for a in (joint_ids, ys, xs)]
    picked = tags[index[0], index[1], index[2]].cpu().numpy()
    means = np.zeros((joints.shape[0], tag_dim), dtype=np.float32)
    for p in range(joints.shape[0]):
        rows = picked[people == p]
        if len(rows):
            # A list of rows, as the reference passes it, so numpy sums in the same order.
            means[p] = np.mean(list(rows), axis=0)
    return means


def _tile_tag_bounds(
    tags: torch.Tensor, tile: int, tags_lowres: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per tile and tag dimension, values at most / at least every tag in the tile: `[K, L, T]`.

    When `tags` is the x4 bilinear upsampling of `tags_lowres` (always so at scale 1) and the
    tile is 8, every output pixel of tile t mixes low-res rows/columns 2t-1 .. 2t+2 with convex
    weights, so a 4x4/stride-2 window of the low-res map bounds it, up to float32 rounding of
    the interpolation, which a small relative margin covers. Otherwise the full-resolution
    tiles are reduced directly.
    """
    k, h, w, tag_dim = tags.shape
    if (
        tags_lowres is not None
        and tile == 8
        and tuple(tags_lowres.shape) == (k, h // 4, w // 4, tag_dim)
        and h % 8 == 0
        and w % 8 == 0
    ):
        chan = tags_lowres.permute(0, 3, 1, 2).reshape(1, k * tag_dim, h // 4, w // 4)
        upper = F.max_pool2d(chan, 4, 2, 1)[0]
        lower = -F.max_pool2d(-chan, 4, 2, 1)[0]
        margin = 1e-6 * torch.maximum(upper.abs(), lower.abs()) + 1e-30
        upper = upper + margin
        lower = lower - margin
    else:
        chan = tags.permute(0, 3, 1, 2).reshape(1, k * tag_dim, h, w)
        upper = F.max_pool2d(chan, tile, tile, ceil_mode=True)[0]
        lower = -F.max_pool2d(-chan, tile, tile, ceil_mode=True)[0]
    return lower.reshape(k, tag_dim, -1), upper.reshape(k, tag_dim, -1)


class RefineSearch:
    """Exact `argmax(Hm[j] - round(||Tg[j] - t||))` for many (person, joint) pairs at once.

    The reference scans every pixel for every person. Two facts make pruning exact:
    `Hm - round(d) <= Hm` (round(d) >= 0 and float subtraction is monotone), and the float32
    distance is monotone in each |tag - t| component. So per tile of the map, the tile's max
    heatmap minus the rounded distance of the tile's tag bounding box bounds every pixel's score
    from above, and the exact score at any pixel bounds the winner from below. Only tiles whose
    upper bound reaches the best lower bound are scored pixel by pixel; the first row-major
    maximum among them is the reference's answer. Per-image tile statistics are computed once.
    """

    def __init__(
        self, heatmaps: torch.Tensor, tags: torch.Tensor, tags_lowres: torch.Tensor | None = None, tile: int = REFINE_TILE
    ) -> None:
        self.heatmaps = heatmaps
        self.tile = tile
        k, h, w = heatmaps.shape
        self.shape = (k, h, w)
        hmax, arg = F.max_pool2d(heatmaps[None], tile, tile, ceil_mode=True, return_indices=True)
        self.tile_hmax = hmax[0].reshape(k, -1)  # [K, T]
        self.tile_arg = arg[0].reshape(k, -1)  # flat pixel index of each tile's max
        self.tiles_y, self.tiles_x = hmax.shape[-2:]
        self.tile_tmin, self.tile_tmax = _tile_tag_bounds(tags, tile, tags_lowres)
        self.flat_hm = heatmaps.reshape(k, h * w)
        self.flat_tags = tags.reshape(k, h * w, tags.shape[-1])
        # Tags at each tile's peak pixel, per joint: [K, T, L].
        self.tile_peak_tags = torch.gather(
            self.flat_tags, 1, self.tile_arg[..., None].expand(-1, -1, self.flat_tags.shape[-1])
        )
        dy, dx = torch.meshgrid(
            torch.arange(tile, device=heatmaps.device), torch.arange(tile, device=heatmaps.device), indexing="ij"
        )
        self.offsets = (dy.reshape(-1), dx.reshape(-1))

    @staticmethod
    def _rounded_distance(diff: torch.Tensor) -> torch.Tensor:
        """round(sqrt(sum of squares)) over the last axis, in float32 like the reference."""
        return torch.round(diff.square().sum(dim=-1).sqrt())

    def _candidate_tiles(self, target_tags: torch.Tensor, joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query, tile) pairs whose score bound reaches the query's achievable lower bound.

        Queries are handled joint by joint so each joint's tile statistics broadcast over its
        queries instead of being copied per query.
        """
        queries, tiles = [], []
        for j in torch.unique(joint).tolist():
            which = torch.nonzero(joint == j, as_tuple=True)[0]
            t = target_tags[which]  # [Q, L]
            hmax = self.tile_hmax[j]  # [T]
            # Exact scores at each tile's peak: an achievable lower bound per query.
            peak = hmax - self._rounded_distance(self.tile_peak_tags[j][None] - t[:, None, :])  # [Q, T]
            lower = peak.max(dim=1, keepdim=True).values
            # Lower bound of |tag - t| per component over each tile's tag box (0 inside it).
            tt = t[:, :, None]  # [Q, L, 1]
            gap = torch.clamp(self.tile_tmin[j][None] - tt, min=0) + torch.clamp(tt - self.tile_tmax[j][None], min=0)
            upper = hmax - self._rounded_distance(gap.transpose(1, 2))  # [Q, T]
            q, tile = torch.nonzero(upper >= lower, as_tuple=True)
            queries.append(which[q])
            tiles.append(tile)
        return torch.cat(queries), torch.cat(tiles)

    def argmax(self, target_tags: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """Flat pixel index of the winner for each query (target tag `[L]`, joint index)."""
        k, h, w = self.shape
        n = target_tags.shape[0]
        if n == 0:
            return torch.zeros(0, dtype=torch.long, device=self.heatmaps.device)
        query, tile = self._candidate_tiles(target_tags, joint)
        ty, tx = tile // self.tiles_x, tile % self.tiles_x
        ys = ty[:, None] * self.tile + self.offsets[0][None]
        xs = tx[:, None] * self.tile + self.offsets[1][None]
        inside = (ys < h) & (xs < w)
        flat = torch.clamp(ys, max=h - 1) * w + torch.clamp(xs, max=w - 1)  # [C, tile*tile]
        joint_b = joint[query][:, None].expand_as(flat)
        heat = self.flat_hm[joint_b, flat]
        diff = self.flat_tags[joint_b, flat] - target_tags[query][:, None, :]
        score = heat - self._rounded_distance(diff)
        score = torch.where(inside, score, torch.full_like(score, -torch.inf))
        owner = query[:, None].expand_as(flat).reshape(-1)
        score = score.reshape(-1)
        flat = flat.reshape(-1)
        best = torch.full((n,), -torch.inf, device=score.device, dtype=score.dtype)
        best = best.scatter_reduce(0, owner, score, reduce="amax")
        # First row-major maximum, as numpy's argmax over the whole map returns.
        tie = score == best[owner]
        first = torch.full((n,), h * w, device=flat.device, dtype=flat.dtype)
        return first.scatter_reduce(0, owner, torch.where(tie, flat, torch.full_like(flat, h * w)), reduce="amin")


def refine(
    joints: np.ndarray, heatmaps: torch.Tensor, tags: torch.Tensor, tags_lowres: torch.Tensor | None = None,
    offset: float = 0.5,
) -> np.ndarray:
    """Fill every missing joint with the best pixel of its map near the person's mean tag.

    For person p and joint j the reference picks the first row-major maximum of
    `Hm[j] - round(||Tg[j] - mean_tag_p||)` and takes it if its heatmap value is positive;
    `RefineSearch` finds the same pixel for all (p, j) at once without scanning every map.
    The pixel is moved by `offset` (0.5; UDP: 0) and a quarter step towards its higher neighbour.
    """
    n_people = joints.shape[0]
    if n_people == 0:
        return joints
    _, h, w = heatmaps.shape
    device = heatmaps.device
    # Only missing joints can change, so only they are searched.
    people, joint_ids = np.nonzero(joints[:, :, 2] == 0)
    if people.size == 0:
        return joints
    mean_tags = torch.from_numpy(_mean_tags(joints, tags)).to(device)
    joint_t = torch.from_numpy(joint_ids).to(device)
    flat = RefineSearch(heatmaps, tags, tags_lowres).argmax(mean_tags[torch.from_numpy(people).to(device)], joint_t)
    yy, xx = flat // w, flat % w
    val = heatmaps[joint_t, yy, xx]
    dx, dy = _quarter_offsets(heatmaps, joint_t, xx, yy)
    cand_v = val.cpu().numpy()
    fill = cand_v > 0
    rows, cols = people[fill], joint_ids[fill]
    joints[rows, cols, 0] = (xx.double() + offset + dx.double()).cpu().numpy()[fill]
    joints[rows, cols, 1] = (yy.double() + offset + dy.double()).cpu().numpy()[fill]
    joints[rows, cols, 2] = cand_v[fill]
    return joints


def to_image_coords(joints: np.ndarray, geometry: ImageGeometry | UdpGeometry, map_size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """Map coordinates -> original-image pixels (`get_group_preds`): from the base canvas, or,
    with UDP, from the heatmap grid of size `map_size_wh` (the maps grouping read)."""
    if isinstance(geometry, UdpGeometry):
        if map_size_wh is None:
            raise ValueError("UDP maps back from the heatmap grid: give its size")
        return udp_to_image_coords(joints, geometry.scale, map_size_wh)
    wb, hb = geometry.base_size_wh
    cx, cy = geometry.center
    sw = geometry.scale[0] * 200.0
    sh = geometry.scale[1] * 200.0
    out = joints.copy()
    out[:, :, 0] = joints[:, :, 0] * (sw / wb) + cx - sw * 0.5
    out[:, :, 1] = joints[:, :, 1] * (sh / hb) + cy - sh * 0.5
    return out


def group(
    maps: AggregatedMaps, keypoints: KeypointSet, config: InferenceConfig, candidates: Candidates | None = None
) -> Grouped:
    """Run matching, adjust, scoring and refine; coordinates stay on the base canvas.

    `candidates` are the top-k peaks to match (computed from `maps` when None); tests pass
    re-ordered ones to check what follows a reordering of near-tied peaks.
    """
    cands = candidates if candidates is not None else top_k(maps.heatmaps, maps.tags, config.max_people)
    joints = match_by_tag(cands, keypoints, config)
    if config.adjust:
        joints = adjust_udp(joints, maps.heatmaps) if config.udp else adjust(joints, maps.heatmaps)
    scores = person_scores(joints)
    if config.refine:
        joints = refine(joints, maps.heatmaps, maps.tags, maps.tags_lowres, offset=0.0 if config.udp else 0.5)
    return Grouped(joints, scores)


def poses_from(grouped: Grouped, geometry: ImageGeometry | UdpGeometry, map_size_wh: tuple[int, int] | None = None) -> list[Pose]:
    """`Pose` objects in original-image pixels, in the reference's person order (`map_size_wh`:
    the size of the maps grouped, which UDP maps back from)."""
    coords = to_image_coords(grouped.joints, geometry, map_size_wh)
    return [
        Pose(keypoints=np.ascontiguousarray(coords[p, :, :3]), score=float(grouped.scores[p]))
        for p in range(coords.shape[0])
    ]
