"""Pictures of predictions: masks, boxes and reference points drawn over the frames."""
from typing import Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

COLORS = ((255, 64, 64), (64, 160, 255), (64, 220, 96), (255, 200, 32), (200, 80, 255), (32, 220, 220),
          (255, 128, 0), (255, 96, 200))


def color(index: int) -> Tuple[int, int, int]:
    return COLORS[index % len(COLORS)]


def label_palette(num_colors: int = 256) -> list:
    """The PASCAL VOC / DAVIS palette (flattened RGB triples): label k gets the colour whose bits
    are spread from k's bits, e.g. 1 -> (128, 0, 0), 2 -> (0, 128, 0)."""
    palette = []
    for label in range(num_colors):
        r = g = b = 0
        value = label
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette += [r, g, b]
    return palette


def label_image(labels: np.ndarray) -> Image.Image:
    """A palette PNG image of an `[H, W]` uint8 label map."""
    image = Image.fromarray(labels.astype(np.uint8), mode='P')
    image.putpalette(label_palette())
    return image


def overlay(frame: Image.Image, mask: np.ndarray = None, box: Sequence[float] = None,
            point: Sequence[float] = None, rgb: Tuple[int, int, int] = COLORS[0], alpha: float = 0.5) -> Image.Image:
    """The frame with a mask `[H, W]` (bool) blended in, a box (x1, y1, x2, y2 pixels) outlined and a
    point (x, y pixels) marked, all in `rgb`."""
    pixels = np.asarray(frame.convert('RGB')).astype(np.float32)
    if mask is not None:
        mask = mask.astype(bool)
        pixels[mask] = pixels[mask] * (1 - alpha) + np.asarray(rgb, np.float32) * alpha
    image = Image.fromarray(pixels.round().astype(np.uint8))
    draw = ImageDraw.Draw(image)
    width = max(2, round(min(image.size) / 180))
    if box is not None:
        draw.rectangle(tuple(box), outline=rgb, width=width)
    if point is not None:
        x, y = point
        r = 2 * width
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb, outline=(255, 255, 255), width=1)
    return image
