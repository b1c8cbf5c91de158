"""Pictures of predictions: masks, boxes and reference points drawn over the frames."""
from typing import List, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

OUTLINE_COLORS = ((255, 0, 255), (0, 255, 255), (255, 255, 255), (255, 128, 0), (0, 255, 0))
"""Saturated colours for drawing predictions; the one most unlike the object's colours is used."""


def contrasting_color(pixels: np.ndarray) -> Tuple[int, int, int]:
    """The colour of OUTLINE_COLORS farthest from the mean of `pixels` `[N, 3]` (the first one when N = 0)."""
    if len(pixels) == 0:
        return OUTLINE_COLORS[0]
    distances = np.linalg.norm(np.asarray(OUTLINE_COLORS, np.float32) - pixels.mean(0), axis=1)
    return OUTLINE_COLORS[int(distances.argmax())]


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
            point: Sequence[float] = None, rgb: Tuple[int, int, int] = None, alpha: float = 0.6) -> Image.Image:
    """The frame with a mask `[H, W]` (bool) drawn as translucent diagonal stripes (the object's own colours
    show between them) inside an opaque outline, a box (x1, y1, x2, y2 pixels) outlined and a point (x, y
    pixels) marked, all in `rgb` (default: `contrasting_color` of the masked pixels)."""
    pixels = np.asarray(frame.convert('RGB')).astype(np.float32)
    mask = None if mask is None else mask.astype(bool)
    if rgb is None:
        rgb = contrasting_color(pixels[mask] if mask is not None else pixels[:0])
    width = max(2, round(min(frame.size) / 180))
    if mask is not None:
        rows, cols = np.indices(mask.shape)
        stripes = mask & ((rows + cols) // (2 * width) % 2 == 0)
        pixels[stripes] = pixels[stripes] * (1 - alpha) + np.asarray(rgb, np.float32) * alpha
    pixels = np.ascontiguousarray(pixels.round().astype(np.uint8))
    if mask is not None:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(pixels, contours, -1, rgb, width)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    if box is not None:
        draw.rectangle(tuple(box), outline=rgb, width=1)
    if point is not None:
        x, y = point
        r = 2 * width
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb, outline=(0, 0, 0), width=1)
    return image


def captioned(image: Image.Image, text: str) -> Image.Image:
    """The image above a white band with `text` in black, wrapped to the image width."""
    font = ImageFont.load_default(size=max(10, image.width // 14))
    measure = ImageDraw.Draw(image)
    lines: List[str] = []
    for word in text.split():
        if lines and measure.textlength(f'{lines[-1]} {word}', font=font) <= image.width - 4:
            lines[-1] = f'{lines[-1]} {word}'
        else:
            lines.append(word)
    line_height = font.getbbox('Ag')[3] + 2
    result = Image.new('RGB', (image.width, image.height + line_height * len(lines) + 4), (255, 255, 255))
    result.paste(image.convert('RGB'), (0, 0))
    draw = ImageDraw.Draw(result)
    for k, line in enumerate(lines):
        draw.text((2, image.height + 2 + k * line_height), line, fill=(0, 0, 0), font=font)
    return result


def side_by_side(images: Sequence[Image.Image], gap: int = 4) -> Image.Image:
    """The images in one row, top-aligned, `gap` white pixels apart."""
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    result = Image.new('RGB', (width, max(image.height for image in images)), (255, 255, 255))
    left = 0
    for image in images:
        result.paste(image.convert('RGB'), (left, 0))
        left += image.width + gap
    return result


def sentence_overlays(frame: Image.Image, masks: np.ndarray, texts: Sequence[str]) -> Image.Image:
    """The frame with the mask of one sentence (`masks [1, H, W]`), or one captioned panel per sentence side
    by side (`masks [S, H, W]`, S > 1)."""
    if len(texts) == 1:
        return overlay(frame, masks[0])
    return side_by_side([captioned(overlay(frame, mask), text) for mask, text in zip(masks, texts)])
