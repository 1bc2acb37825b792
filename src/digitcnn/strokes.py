"""The geometry of an ink mask that segment.py builds on: its connected components, and the seams that could
cut one of them in two. numpy only; the knobs come from segment.SegmentConfig."""

import numpy as np

from .preprocess import stroke_width


def label_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected component labels (1..count; 0 = ground) and each component's box [top, bottom, left, right)
    as a (count, 4) array, by union-find over the runs of each row, all in numpy: a page of ten thousand specks
    costs no more than a few of its rows would in a Python loop."""
    height, width = mask.shape
    stride = width + 2
    padded = np.zeros((height, width + 2), bool)
    padded[:, 1:-1] = mask
    # Where a padded row changes, a run starts or stops (exclusive): they alternate along each row, so one flat
    # search finds both, in row-major order (a 2-D np.nonzero costs eight times as much).
    rows, columns = np.divmod(np.flatnonzero(padded[:, 1:] != padded[:, :-1]), width + 1)
    rows, starts, stops = rows[::2], columns[::2], columns[1::2]
    count = len(rows)
    if count == 0:
        return np.zeros(mask.shape, np.int32), np.zeros((0, 4), np.int64)
    start_keys, stop_keys = rows * stride + starts, rows * stride + stops
    # The runs of the row above that touch each run (diagonals included) are a contiguous range of indices.
    first = np.searchsorted(stop_keys, (rows - 1) * stride + starts, side="left")
    last = np.searchsorted(start_keys, (rows - 1) * stride + stops, side="right")
    touching = np.maximum(last - first, 0)
    below = np.repeat(np.arange(count), touching)
    above = np.repeat(first, touching) + np.arange(touching.sum()) - np.repeat(np.cumsum(touching) - touching, touching)
    parent = np.arange(count)
    while True:  # hook each edge's roots onto the smaller one, then compress every path fully
        root_above, root_below = parent[above], parent[below]
        differing = root_above != root_below
        if not differing.any():
            break
        smaller = np.minimum(root_above, root_below)[differing]
        np.minimum.at(parent, root_above[differing], smaller)
        np.minimum.at(parent, root_below[differing], smaller)
        while not np.array_equal(parent[parent], parent):
            parent = parent[parent]
    # Every root is its component's first run, so numbering the roots in order numbers the components as
    # np.unique(parent, return_inverse=True) would, without its sort.
    run_labels = np.cumsum(parent == np.arange(count), dtype=np.int32)[parent]
    components = int(run_labels.max())
    # Paint the label image: +label where a run starts, -label where it stops, summed along each row.
    painted = np.zeros((height, width + 1), np.int32)
    painted[rows, starts] = run_labels
    np.add.at(painted, (rows, stops), -run_labels)
    labels = np.cumsum(painted, axis=1)[:, :width]
    boxes = np.empty((components, 4), np.int64)
    boxes[:, [0, 2]] = np.iinfo(np.int64).max
    boxes[:, [1, 3]] = -1
    np.minimum.at(boxes[:, 0], run_labels - 1, rows)
    np.maximum.at(boxes[:, 1], run_labels - 1, rows + 1)
    np.minimum.at(boxes[:, 2], run_labels - 1, starts)
    np.maximum.at(boxes[:, 3], run_labels - 1, stops)
    return labels, boxes


def find_seams(own: np.ndarray, line_height: float, config) -> list[tuple[np.ndarray, float]]:
    """Seams through a component's mask (rows x columns), left to right, each as (its column in every row,
    strokes it crosses). By dynamic programming from the top row down, on a copy at most seam_rows tall, every
    seam costs the ink pixels it passes plus seam_step per sideways move; the cheapest seams ending at
    well-spaced columns are kept."""
    height, width = own.shape
    factor = max(1, int(np.ceil(height / config.seam_rows)))
    padded = np.pad(own, ((0, -height % factor), (0, -width % factor)))
    small = padded.reshape(padded.shape[0] // factor, factor, -1, factor).max(axis=(1, 3))
    ink = small.astype(np.float32)
    total = ink[0].copy()
    moves = np.zeros(small.shape, np.int8)  # -1, 0, +1: the column each row's seam came from, relative
    from_left, from_right = np.full_like(total, np.inf), np.full_like(total, np.inf)
    for row in range(1, small.shape[0]):
        from_left[1:] = total[:-1] + config.seam_step
        from_right[:-1] = total[1:] + config.seam_step
        best = np.minimum(np.minimum(from_left, total), from_right)
        moves[row] = np.where(best == total, 0, np.where(best == from_left, -1, 1))
        total = best + ink[row]
    stroke = max(stroke_width(small.astype(np.float32)), 1.0)
    before = np.concatenate([np.zeros((height, 1)), np.cumsum(own, axis=1)], axis=1)  # ink left of each column
    area = float(before[:, -1].sum())
    margin = max(1.0, config.cut_margin * line_height)
    spacing = max(2.0, config.cut_spacing * line_height)
    most = int(np.floor(width / line_height * config.cuts_per_height))
    kept: list[tuple[float, np.ndarray, float]] = []
    for end in np.argsort(total, kind="stable"):
        if len(kept) >= most:
            break
        strokes = float(total[end]) / stroke
        if strokes > config.max_cut_strokes:
            break
        path = np.empty(small.shape[0], np.int64)
        path[-1] = end
        for row in range(small.shape[0] - 1, 0, -1):
            path[row - 1] = path[row] + moves[row, path[row]]
        seam = np.minimum(np.repeat(path * factor + factor // 2, factor)[:height], width)
        middle = float(seam.mean())
        if not margin <= middle < width - margin or any(abs(middle - other) < spacing for other, _, _ in kept):
            continue
        left_ink = float(before[np.arange(height), seam].sum())
        if min(left_ink, area - left_ink) < config.min_part * area:  # it shaves a sliver off the component
            continue
        kept.append((middle, seam, strokes))
    return [(seam, strokes) for _, seam, strokes in sorted(kept, key=lambda item: item[0])]
