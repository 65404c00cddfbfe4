"""Drawing a scene's frames: a palette chosen from the style, and `draw_frame`, a
pure function of (spec, scene, frame index, size), so a preview looks like the
video it stands for. Frames are cheap by design: everything that does not move
(the gradient, the captions, the label) is drawn once per scene and cached, and
a frame is a crop of a larger background plus a few pastes.

The narration runs as captions: a few words at a time (`caption_chunks`), each
on screen for its share of the scene by word count, wrapped to the frame and
sized to it, on a translucent box so they read over any colour and at phone
width. The spoken narration (`speech`) starts each chunk as its caption shows.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from projects.engines.base import ProjectSpec, Scene

# The clip's frame rate.
RENDER_FPS = 24
# A caption stays up at least this long (unless the scene is shorter), and holds
# about this many words: a few words at a glance, read at normal speed.
MIN_CAPTION_SECONDS = 1.0
CAPTION_WORDS = 6
CAPTION_MAX_LINES = 3
_PAUSE_MARKS = (*",.;:!?…—", "\u2013")

RGB = tuple[int, int, int]


# --- Looks: colours chosen from the style -------------------------------------


@dataclass(frozen=True)
class Palette:
    name: str
    top: RGB
    bottom: RGB
    glows: tuple[RGB, RGB]
    accent: RGB


PALETTES = {
    "amber": Palette(
        "warm amber",
        (74, 28, 40),
        (222, 120, 52),
        ((255, 196, 112), (186, 60, 78)),
        (255, 206, 120),
    ),
    "ocean": Palette(
        "cool ocean",
        (10, 36, 74),
        (32, 140, 170),
        ((120, 220, 230), (40, 90, 180)),
        (140, 230, 240),
    ),
    "night": Palette(
        "deep violet", (14, 10, 38), (84, 40, 130), ((190, 90, 220), (40, 60, 160)), (230, 170, 255)
    ),
    "forest": Palette(
        "fresh green",
        (12, 48, 40),
        (76, 160, 96),
        ((200, 240, 140), (30, 110, 110)),
        (210, 250, 160),
    ),
    "sunset": Palette(
        "sunset rose",
        (90, 30, 90),
        (250, 130, 110),
        ((255, 210, 120), (220, 70, 140)),
        (255, 230, 150),
    ),
    "slate": Palette(
        "soft slate",
        (30, 36, 48),
        (120, 132, 150),
        ((220, 226, 236), (70, 90, 120)),
        (236, 240, 246),
    ),
}
_STYLE_WORDS = {
    "amber": "warm cozy cosy sunny autumn golden vintage retro",
    "ocean": "calm cool ocean sea blue corporate clean tech serene water",
    "night": "dark noir cinematic dramatic night moody epic space",
    "forest": "nature green fresh eco organic forest spring",
    "sunset": "playful fun bright pop kids colourful colorful vibrant energetic",
    "slate": "minimal minimalist mono monochrome simple documentary neutral elegant",
}
_WORD_PALETTE = {word: key for key, words in _STYLE_WORDS.items() for word in words.split()}


def palette_for(style: str) -> Palette:
    """The first style word with a known mood picks the palette; otherwise a stable hash does."""
    for word in re.findall(r"[a-z]+", style.lower()):
        if word in _WORD_PALETTE:
            return PALETTES[_WORD_PALETTE[word]]
    keys = sorted(PALETTES)
    return PALETTES[keys[_stable_int(style.strip().lower()) % len(keys)]]


def _stable_int(text: str) -> int:
    # Not hash(): that changes between processes, and frames must not.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _shift_hue(colour: RGB, shift: float) -> RGB:
    hue, light, saturation = colorsys.rgb_to_hls(*(channel / 255 for channel in colour))
    red, green, blue = colorsys.hls_to_rgb((hue + shift) % 1.0, light, saturation)
    return round(red * 255), round(green * 255), round(blue * 255)


# --- Frames -------------------------------------------------------------------

Layer = tuple[Image.Image, Image.Image, tuple[int, int]]  # image, its alpha mask, position


@dataclass(frozen=True)
class Caption:
    """A few words of narration and when they are on screen, in seconds from the scene's start."""

    text: str
    start: float
    end: float


def caption_chunks(narration: str, seconds: float) -> list[Caption]:
    """The narration in chunks of a few words, each shown for its share of `seconds` by word count.

    Chunks end at a pause (a comma, a full stop) when one comes near, never
    leave one or two words alone at the end, and are never so many that one
    would be up for less than `MIN_CAPTION_SECONDS`: a long narration in a
    short scene gets longer chunks instead.
    """
    words = narration.split()
    if not words or seconds <= 0:
        return []
    most = max(1, int(seconds / MIN_CAPTION_SECONDS))
    size = max(CAPTION_WORDS, math.ceil(len(words) / most))
    captions = []
    before = 0
    for group in _word_groups(words, size, most):
        start = seconds * before / len(words)
        before += len(group)
        captions.append(Caption(" ".join(group), start, seconds * before / len(words)))
    return captions


def _word_groups(words: list[str], size: int, most: int) -> list[list[str]]:
    groups: list[list[str]] = []
    current: list[str] = []
    for position, word in enumerate(words):
        current.append(word)
        left = len(words) - position - 1
        if left == 0:
            break
        if left < 3 and len(current) + left <= size + 2:
            continue  # no orphan at the end
        at_pause = word.endswith(_PAUSE_MARKS) and len(current) >= max(2, size // 2)
        # An early break must leave room for the rest within `most` chunks.
        room = len(groups) + 1 + math.ceil(left / size) <= most
        if len(current) >= size or (at_pause and room):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def caption_at(captions: Sequence[Caption], t: float) -> int | None:
    """The index of the caption on screen at `t`, or None before the first and after the last."""
    for index, caption in enumerate(captions):
        last = index == len(captions) - 1
        if caption.start <= t < caption.end or (last and t == caption.end):
            return index
    return None


@dataclass(frozen=True)
class _Look:
    """What a scene's frames share, drawn once: the frames only move and paste these."""

    background: Image.Image
    pan: tuple[float, float, float, float]  # window start and end, as shares of the spare room
    captions: tuple[Caption, ...]
    caption_layers: tuple[Layer, ...]
    label: Layer
    accent: RGB
    bar_height: int
    scene_total: int


def draw_frame(
    spec: ProjectSpec, scene: Scene, frame_index: int, size: tuple[int, int], fps: int = RENDER_FPS
) -> Image.Image:
    """Frame `frame_index` of the scene at `size`: the same picture for the same arguments."""
    look = _look(spec, scene, size)
    seconds = scene.seconds
    t = frame_index / fps
    share = min(t / seconds, 1.0)
    frame = _pan(look.background, size, look.pan, share)
    shown = caption_at(look.captions, t)
    if shown is not None:
        _paste(frame, look.caption_layers[shown])
    _paste(frame, look.label)
    done = min((scene.index + share) / look.scene_total, 1.0)
    # Early in a long video the bar is narrower than a pixel: nothing to draw yet.
    bar_right = round(size[0] * done) - 1
    if bar_right >= 0:
        bar_top = size[1] - look.bar_height
        ImageDraw.Draw(frame).rectangle((0, bar_top, bar_right, size[1] - 1), fill=look.accent)
    return frame


def _pan(
    background: Image.Image,
    size: tuple[int, int],
    pan: tuple[float, float, float, float],
    share: float,
) -> Image.Image:
    width, height = size
    spare_x, spare_y = background.width - width, background.height - height
    # Mostly steady, slightly eased, so the camera neither jerks nor stalls.
    eased = 0.75 * share + 0.25 * (0.5 - 0.5 * math.cos(math.pi * share))
    x0, y0, x1, y1 = pan
    left = round((x0 + (x1 - x0) * eased) * spare_x)
    top = round((y0 + (y1 - y0) * eased) * spare_y)
    return background.crop((left, top, left + width, top + height))


def _paste(frame: Image.Image, layer: Layer) -> None:
    image, mask, position = layer
    frame.paste(image, position, mask)


@lru_cache(maxsize=64)
def _font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=pixels)


@lru_cache(maxsize=4)
def _look(spec: ProjectSpec, scene: Scene, size: tuple[int, int]) -> _Look:
    width, height = size
    unit = min(width, height)
    palette = palette_for(spec.style)
    seed = _stable_int(f"{spec.style.strip().lower()}|{scene.index}")
    scene_total = max(spec.scene_count, scene.index + 1)
    label = f"Scene {scene.index + 1}/{scene_total}"
    label_pixels = max(9, round(unit * 0.03))
    if spec.title.strip():
        label = _fit(f"{label} · {spec.title.strip()}", _font(label_pixels), width * 0.8)
    captions = tuple(caption_chunks(scene.narration, scene.seconds))
    return _Look(
        background=_background(palette, scene.index, seed, size),
        pan=_PANS[scene.index % len(_PANS)],
        captions=captions,
        caption_layers=tuple(_caption_layer(caption.text, size) for caption in captions),
        label=_text_layer(label, label_pixels, (round(unit * 0.045),) * 2),
        accent=_shift_hue(palette.accent, _hue_shift(scene.index)),
        bar_height=max(2, round(unit * 0.007)),
        scene_total=scene_total,
    )


# Where the camera window starts and ends, alternating so consecutive scenes differ.
_PANS = ((0.0, 0.2, 1.0, 0.8), (1.0, 1.0, 0.0, 0.3), (0.1, 0.0, 0.9, 1.0), (0.9, 0.6, 0.1, 0.0))


def _hue_shift(index: int) -> float:
    return 0.05 * math.sin(index * 1.7)


def _background(palette: Palette, index: int, seed: int, size: tuple[int, int]) -> Image.Image:
    """A gradient with soft glows, larger than the frame so a window of it can pan.

    Drawn at an eighth of the size and scaled up: that is what makes it soft,
    and it costs a few milliseconds per scene instead of per frame.
    """
    rng = random.Random(seed)
    big = (round(size[0] * 1.35), round(size[1] * 1.35))
    small = (max(16, big[0] // 8), max(16, big[1] // 8))
    shift = _hue_shift(index)
    ramp = Image.linear_gradient("L").resize((512, 512)).rotate(rng.uniform(-40, 40), Image.BICUBIC)
    ramp = ImageOps.autocontrast(ramp.crop((128, 128, 384, 384))).resize(small, Image.BICUBIC)
    top = Image.new("RGB", small, _shift_hue(palette.top, shift))
    bottom = Image.new("RGB", small, _shift_hue(palette.bottom, shift))
    canvas = Image.composite(bottom, top, ramp).convert("RGBA")
    glows = Image.new("RGBA", small, (0, 0, 0, 0))
    draw = ImageDraw.Draw(glows)
    for k in range(3):
        colour = _shift_hue(palette.glows[k % 2], shift)
        radius = rng.uniform(0.15, 0.3) * max(small)
        cx, cy = rng.uniform(0.1, 0.9) * small[0], rng.uniform(0.1, 0.9) * small[1]
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(*colour, 110))
    glows = glows.filter(ImageFilter.GaussianBlur(max(small) / 12))
    canvas.alpha_composite(glows)
    return canvas.convert("RGB").resize(big, Image.BICUBIC)


def _caption_layout(text: str, size: tuple[int, int]) -> tuple[list[str], int]:
    """Wrap a caption to the frame, shrinking the font until it takes at most three lines.

    Sizes follow the frame's short side, so a portrait video seen at phone
    width has captions as large, on screen, as a landscape one on a laptop.
    """
    width, _ = size
    unit = min(size)
    largest, smallest = max(10, round(unit * 0.058)), max(8, round(unit * 0.042))
    pixels = largest
    while True:
        font = _font(pixels)
        lines = _wrap(text, font, width * 0.84)
        if len(lines) <= CAPTION_MAX_LINES or pixels <= smallest:
            break
        pixels = max(smallest, round(pixels * 0.9))
    if len(lines) > CAPTION_MAX_LINES:
        last = " ".join(lines[CAPTION_MAX_LINES - 1 :])
        lines = [*lines[: CAPTION_MAX_LINES - 1], _fit(last, font, width * 0.84)]
    return lines, pixels


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, limit: float) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= limit or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
        while font.getlength(current) > limit and len(current) > 1:
            cut = _longest_prefix(current, font, limit)
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    return lines


def _longest_prefix(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, limit: float
) -> int:
    cut = len(text)
    while cut > 1 and font.getlength(text[:cut]) > limit:
        cut -= 1
    return cut


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, limit: float) -> str:
    if font.getlength(text) <= limit:
        return text
    while text and font.getlength(f"{text}…") > limit:
        text = text[:-1]
    return f"{text.rstrip()}…"


def _line_height(pixels: int) -> int:
    return round(pixels * 1.32)


def _text_layer(text: str, pixels: int, position: tuple[int, int]) -> Layer:
    """White text with a soft dark shadow, on a transparent layer."""
    font = _font(pixels)
    offset = max(1, round(pixels / 18))
    width = math.ceil(font.getlength(text)) + 2 * offset + 4
    height = _line_height(pixels) + offset
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    middle = (width / 2 - offset / 2, height / 2 - offset / 2)
    draw.text(
        (middle[0] + offset, middle[1] + offset), text, font=font, fill=(0, 0, 0, 150), anchor="mm"
    )
    draw.text(middle, text, font=font, fill=(255, 255, 255, 255), anchor="mm")
    return layer.convert("RGB"), layer.getchannel("A"), position


def _caption_layer(text: str, size: tuple[int, int]) -> Layer:
    """The caption's lines, centred, white on a translucent dark box low in the frame."""
    width, height = size
    lines, pixels = _caption_layout(text, size)
    font = _font(pixels)
    line_height = _line_height(pixels)
    pad_x, pad_y = round(pixels * 0.6), round(pixels * 0.35)
    box_width = min(width, round(max(font.getlength(line) for line in lines)) + 2 * pad_x)
    box_height = line_height * len(lines) + 2 * pad_y
    layer = Image.new("RGBA", (box_width, box_height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rounded_rectangle(
        (0, 0, box_width - 1, box_height - 1), radius=round(pixels * 0.35), fill=(6, 6, 14, 165)
    )
    for k, line in enumerate(lines):
        middle = (box_width / 2, pad_y + line_height * (k + 0.5))
        draw.text(middle, line, font=font, fill=(255, 255, 255, 255), anchor="mm")
    # Above the bar and clear of a phone player's controls: lower in a wide
    # frame, about three quarters down a tall one.
    bottom = height - max(round(min(size) * 0.08), round(height * 0.14))
    position = ((width - box_width) // 2, max(0, bottom - box_height))
    return layer.convert("RGB"), layer.getchannel("A"), position
