"""SyntheticStreets: a procedural, class-imbalanced street-scene dataset embedded in recallseg.

Nothing is downloaded: every sample is drawn on the fly from ``(seed, split, index)``, so
the same config always yields the same pixels. The scenes are built to show what recall
loss is about:

- dominant classes: road, building, sky;
- a mid-frequency *hard* class: sidewalk, whose colour is within the noise of the road's;
- rare *easy* classes: car (vivid colours) and traffic sign (bright yellow);
- rare *hard* classes: pedestrian (coloured like buildings, small) and pole (thin, grey
  like the sidewalk);
- vegetation in between;
- ignore pixels (255): the ego vehicle's bonnet at the bottom and the thin outlines of cars,
  as in Cityscapes.
"""

from __future__ import annotations

import numpy as np

from recallseg.data.base import SegmentationDataset
from recallseg.errors import ConfigError

CLASSES = ("road", "sidewalk", "building", "sky", "vegetation", "car", "pedestrian", "traffic sign", "pole")
PALETTE = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (70, 130, 180),
    (107, 142, 35),
    (0, 0, 142),
    (220, 20, 60),
    (220, 220, 0),
    (153, 153, 153),
)
ROAD, SIDEWALK, BUILDING, SKY, VEGETATION, CAR, PEDESTRIAN, SIGN, POLE = range(len(CLASSES))
SPLITS = {"train": 0, "val": 1, "test": 2}


class SyntheticStreets(SegmentationDataset):
    """Procedural street scenes; see the module docstring for the classes.

    Args:
        split: ``train``, ``val`` or ``test`` (disjoint random streams).
        height, width: image size in pixels.
        num_train, num_val, num_test: number of samples in each split.
        seed: the dataset seed; the same seed gives the same samples.
        noise: standard deviation of the per-pixel colour noise (makes colour alone ambiguous).
        ignore_regions: draw the ignored bonnet and car outlines (False: every pixel is labelled).
        transform: optional albumentations-style transform.
    """

    classes = CLASSES
    palette = PALETTE
    ignore_index = 255

    def __init__(
        self,
        split: str = "train",
        height: int = 96,
        width: int = 192,
        num_train: int = 2000,
        num_val: int = 100,
        num_test: int = 100,
        seed: int = 0,
        noise: float = 14.0,
        ignore_regions: bool = True,
        transform=None,
    ):
        super().__init__(transform)
        if split not in SPLITS:
            raise ConfigError("dataset.split", f"SyntheticStreets has the splits {', '.join(sorted(SPLITS))}, got {split!r}")
        if height < 32 or width < 32:
            raise ConfigError("dataset.height", f"SyntheticStreets needs height and width >= 32, got {height}x{width}")
        self.split, self.height, self.width = split, int(height), int(width)
        self.length = {"train": num_train, "val": num_val, "test": num_test}[split]
        self.seed, self.noise, self.ignore_regions = int(seed), float(noise), bool(ignore_regions)

    def __len__(self) -> int:
        return self.length

    def describe(self, index: int) -> str:
        return f"SyntheticStreets(split={self.split}, seed={self.seed})[{index}]"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, SPLITS[self.split], index])
        return draw_scene(rng, self.height, self.width, self.noise, self.ignore_regions)


def _fill(image, mask, rows, cols, label, colour):
    image[rows, cols] = colour
    mask[rows, cols] = label


def draw_scene(rng: np.random.Generator, height: int, width: int, noise: float, ignore_regions: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene; returns ``(image uint8 HxWx3, mask uint8 HxW)``."""
    H, W = height, width
    image = np.zeros((H, W, 3), dtype=np.float32)
    mask = np.zeros((H, W), dtype=np.uint8)  # ids 0..8 and ignore 255: the dataset's mask_dtype(), no cast later
    rows = np.arange(H)[:, None]
    cols = np.arange(W)[None, :]

    # Sky above the horizon, a vertical blue gradient.
    horizon = int(H * rng.uniform(0.38, 0.5))
    sky = np.array([90, 140, 200], np.float32) + rng.normal(0, 12, 3)
    image[:horizon] = sky - np.linspace(0, 30, horizon)[:, None, None]
    mask[:horizon] = SKY

    # Buildings: a skyline of blocks with heights of their own, colours from one palette.
    x = 0
    while x < W:
        block = int(rng.uniform(0.12, 0.3) * W)
        top = int(horizon * rng.uniform(0.1, 0.7))
        colour = rng.uniform([90, 70, 60], [160, 140, 130])
        _fill(image, mask, slice(top, horizon), slice(x, x + block), BUILDING, colour)
        x += block

    # Ground: road in the middle, sidewalks on both sides whose edges recede to a vanishing point.
    ground = rows >= horizon
    depth = (rows - horizon) / max(H - horizon, 1)  # 0 at the horizon, 1 at the bottom
    centre = W * rng.uniform(0.4, 0.6)
    road_half = (0.08 + 0.55 * depth) * W
    walk_width = (0.02 + 0.25 * depth) * W * rng.uniform(0.7, 1.3)
    road = ground & (np.abs(cols - centre) <= road_half)
    walk = ground & ~road & (np.abs(cols - centre) <= road_half + walk_width)
    road_colour = rng.uniform(70, 110) + rng.normal(0, 4, 3)
    image[road] = road_colour
    mask[road] = ROAD
    image[walk] = road_colour + rng.uniform(8, 16)  # within the noise: sidewalk is hard
    mask[walk] = SIDEWALK
    verge = ground & ~road & ~walk
    image[verge] = rng.uniform([50, 90, 30], [80, 130, 60])
    mask[verge] = VEGETATION

    # Trees in front of the buildings.
    for _ in range(rng.integers(0, 4)):
        cx, cy = rng.uniform(0, W), horizon - rng.uniform(0, 0.3) * H
        rx, ry = rng.uniform(0.04, 0.1) * W, rng.uniform(0.06, 0.16) * H
        blob = ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1
        image[blob] = rng.uniform([40, 100, 30], [80, 150, 60])
        mask[blob] = VEGETATION

    # Poles with traffic signs, standing on the sidewalk: thin and grey like the pavement.
    for _ in range(rng.integers(1, 4)):
        side = rng.choice([-1, 1])
        base = int(rng.uniform(horizon + 0.15 * (H - horizon), H * 0.95))
        d = (base - horizon) / max(H - horizon, 1)
        x = int(centre + side * ((0.08 + 0.55 * d) * W + 0.5 * (0.02 + 0.25 * d) * W))
        if not 0 <= x < W - 1:
            continue
        top = max(int(base - (0.25 + 0.4 * d) * H), 0)
        thickness = max(1, int(round(1 + 2 * d)))
        _fill(image, mask, slice(top, base), slice(x, x + thickness), POLE, road_colour + rng.uniform(10, 22))
        if rng.random() < 0.7:
            size = max(3, int(0.035 * W * (0.5 + d)))
            _fill(image, mask, slice(top, top + size), slice(max(x - size // 2, 0), x + size // 2 + 1), SIGN, rng.uniform([210, 190, 0], [255, 230, 40]))

    # Pedestrians on the sidewalks: small upright ellipses coloured like buildings.
    for _ in range(rng.integers(0, 4)):
        side = rng.choice([-1, 1])
        feet = int(rng.uniform(horizon + 0.1 * (H - horizon), H * 0.97))
        d = (feet - horizon) / max(H - horizon, 1)
        cx = centre + side * ((0.08 + 0.55 * d) * W + rng.uniform(0.2, 0.8) * (0.02 + 0.25 * d) * W)
        ry, rx = (0.06 + 0.12 * d) * H, (0.012 + 0.02 * d) * W
        body = ((cols - cx) / rx) ** 2 + ((rows - (feet - ry)) / ry) ** 2 <= 1
        image[body] = rng.uniform([90, 70, 60], [160, 140, 130])
        mask[body] = PEDESTRIAN

    # Cars on the road: vivid boxes with darker windows, outlined with ignore pixels.
    for _ in range(rng.integers(0, 4)):
        bottom = int(rng.uniform(horizon + 0.1 * (H - horizon), H * 0.98))
        d = (bottom - horizon) / max(H - horizon, 1)
        w, h = (0.06 + 0.3 * d) * W, (0.04 + 0.18 * d) * H
        cx = centre + rng.uniform(-0.7, 0.7) * (0.08 + 0.55 * d) * W
        r0, r1, c0, c1 = int(bottom - h), bottom, int(cx - w / 2), int(cx + w / 2)
        r0, c0 = max(r0, 0), max(c0, 0)
        if r1 - r0 < 2 or c1 - c0 < 2:
            continue
        colour = rng.choice([[200, 30, 30], [30, 60, 200], [230, 230, 230], [20, 20, 20], [40, 160, 60]]) + rng.normal(0, 10, 3)
        if ignore_regions:
            mask[max(r0 - 1, 0) : r1 + 1, max(c0 - 1, 0) : c1 + 1] = 255  # label-tool style outline
        _fill(image, mask, slice(r0, r1), slice(c0, c1), CAR, colour)
        image[r0 : r0 + max((r1 - r0) // 3, 1), c0 + 1 : c1 - 1] = colour * 0.4

    # The ego vehicle's bonnet: ignored, like Cityscapes' ego vehicle.
    bonnet = int(H * rng.uniform(0.0, 0.08))
    if bonnet:
        image[H - bonnet :] = [30, 30, 35]
        mask[H - bonnet :] = 255 if ignore_regions else ROAD

    # Lighting and sensor noise.
    image = image * rng.uniform(0.8, 1.2) + rng.normal(0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask
