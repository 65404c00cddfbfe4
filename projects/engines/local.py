"""The local engine: plans scenes from the brief, then draws and encodes them on this machine.

Every frame, of the preview as of the final clip, comes from `draw_frame`, a
pure function of (spec, scene, frame index, size), so a preview looks like the
video it stands for. Frames are cheap by design: everything that does not move
(the gradient, the text, the caption) is drawn once per scene and cached, and
a frame is a crop of a larger background plus a few pastes.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import os
import random
import re
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from .base import ASPECT_SIZES, EngineError, InvalidInputError, ProjectSpec, Scene, StageProgress
from .ffmpeg import ffmpeg_exe, run_ffmpeg

RENDER_FPS = 24
# The preview moves exactly as the render will, at a third of its size.
PREVIEW_FPS = RENDER_FPS
PREVIEW_LONG_SIDE = 640
MAX_SCENE_SECONDS = 600.0
# Drawing the preview's frames is most of write_scene; encoding the WebP is the rest.
PREVIEW_DRAW_SHARE = 0.9

RGB = tuple[int, int, int]


class LocalEngine:
    name = "local"

    def outline(self, spec: ProjectSpec, progress: StageProgress) -> list[Scene]:
        check_spec(spec)
        phrases = _phrases(spec.brief, spec.scene_count)
        keywords = _keywords(f"{spec.title} {spec.brief}")
        count = spec.scene_count
        scenes = []
        for index in range(count):
            # Ceiling bounds: with fewer phrases than scenes, the opening gets
            # one and the empty scenes fall at the end, where a closing fits.
            group = phrases[
                -(-index * len(phrases) // count) : -(-(index + 1) * len(phrases) // count)
            ]
            narration = _narration(spec, index, group, keywords)
            scenes.append(
                Scene(
                    index=index,
                    narration=narration,
                    visual=_visual(spec, index, narration),
                    seconds=float(spec.seconds_per_scene),
                )
            )
            progress.update((index + 1) / count, f"Planned scene {index + 1} of {count}")
        progress.log(f"Outlined {count} scenes from a {len(spec.brief)}-character brief")
        return scenes

    def write_scene(
        self, spec: ProjectSpec, scene: Scene, preview_path: Path, progress: StageProgress
    ) -> Scene:
        check_spec(spec)
        scene = _tidy(scene)
        check_scene(scene)
        size = preview_size(spec.size)
        count = frame_count(scene.seconds, PREVIEW_FPS)
        frames = []
        for frame_index in range(count):
            frames.append(draw_frame(spec, scene, frame_index, size, PREVIEW_FPS))
            progress.update(PREVIEW_DRAW_SHARE * (frame_index + 1) / count)
        progress.check()
        with _atomic_output(preview_path) as partial:
            frames[0].save(
                partial,
                format="WEBP",
                save_all=True,
                append_images=frames[1:],
                duration=round(1000 / PREVIEW_FPS),
                loop=0,
                quality=75,
            )
        progress.update(1.0)
        return scene

    def render_scene(
        self, spec: ProjectSpec, scene: Scene, clip_path: Path, progress: StageProgress
    ) -> None:
        check_spec(spec)
        check_scene(scene)
        width, height = spec.size
        count = frame_count(scene.seconds, RENDER_FPS)
        label = f"Scene {scene.index + 1}"
        progress.log(f"{label}: rendering {count} frames at {width}x{height}")
        started = time.monotonic()

        def feed(stdin: BinaryIO) -> None:
            for frame_index in range(count):
                stdin.write(draw_frame(spec, scene, frame_index, (width, height)).tobytes())

        with _atomic_output(clip_path) as partial:
            args = [
                *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"),
                *("-r", str(RENDER_FPS), "-i", "pipe:0", "-an"),
                *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
                *("-movflags", "+faststart", "-f", "mp4", "-y", str(partial)),
            ]
            run_ffmpeg(args, duration=count / RENDER_FPS, progress=progress, feed=feed, label=label)
        kilobytes = clip_path.stat().st_size / 1024
        elapsed = time.monotonic() - started
        progress.log(f"{label} rendered: {kilobytes:.0f} KB in {elapsed:.1f} s")

    def compose(
        self, spec: ProjectSpec, clip_paths: list[Path], video_path: Path, progress: StageProgress
    ) -> None:
        if not clip_paths:
            raise InvalidInputError("There are no scene clips to join.")
        missing = [path.name for path in clip_paths if not path.is_file()]
        if missing:
            raise EngineError(f"Scene clips are missing: {', '.join(missing)}")
        duration = sum(clip_duration(path) or spec.seconds_per_scene for path in clip_paths)
        with tempfile.TemporaryDirectory(prefix="compose-") as workdir:
            list_file = Path(workdir) / "list.txt"
            list_file.write_text("".join(f"file {_concat_quote(p)}\n" for p in clip_paths))
            with _atomic_output(video_path) as partial:
                args = [
                    *("-f", "concat", "-safe", "0", "-i", str(list_file), "-c", "copy"),
                    *("-movflags", "+faststart", "-f", "mp4", "-y", str(partial)),
                ]
                run_ffmpeg(args, duration=duration, progress=progress, label="Joining scenes")
        kilobytes = video_path.stat().st_size / 1024
        progress.log(f"Joined {len(clip_paths)} scenes: {duration:.1f} s, {kilobytes:.0f} KB")


# --- Checks and small helpers -------------------------------------------------


def check_spec(spec: ProjectSpec) -> None:
    if spec.aspect_ratio not in ASPECT_SIZES:
        raise InvalidInputError(f"Unknown aspect ratio {spec.aspect_ratio!r}.")
    if spec.scene_count < 1:
        raise InvalidInputError("A video needs at least one scene.")
    if not 0 < spec.seconds_per_scene <= MAX_SCENE_SECONDS:
        raise InvalidInputError(
            f"Seconds per scene must be positive, not {spec.seconds_per_scene}."
        )
    if not (spec.brief.strip() or spec.title.strip()):
        raise InvalidInputError("The project has neither a title nor a brief to work from.")


def check_scene(scene: Scene) -> None:
    if not (math.isfinite(scene.seconds) and 0 < scene.seconds <= MAX_SCENE_SECONDS):
        raise InvalidInputError(
            f"Scene {scene.index + 1} must last a positive number of seconds, not {scene.seconds}."
        )


def frame_count(seconds: float, fps: int) -> int:
    return max(1, round(seconds * fps))


def preview_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = size
    scale = PREVIEW_LONG_SIDE / max(width, height)
    # Even sizes keep every video tool happy should a preview ever be re-encoded.
    return 2 * round(width * scale / 2), 2 * round(height * scale / 2)


def clip_duration(path: Path) -> float | None:
    """The duration ffmpeg reads from a file's header, or None if it cannot tell."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", result.stderr)
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _concat_quote(path: Path) -> str:
    # The concat demuxer's own quoting: inside '…', a quote is written '\''.
    return "'" + str(path.resolve()).replace("'", "'\\''") + "'"


@contextmanager
def _atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, moved into place only if the block succeeds.

    So a preview, clip or video is whole or absent: a clip that exists is a
    checkpoint the render may resume from.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".part")
    os.close(handle)
    partial = Path(name)
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# --- Outline: from a brief to scenes -----------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\s*\n\s*|;\s+")
_SPLIT_POINT = re.compile(r",\s+|\s+[—\u2013-]\s+|\s+(?:and|but|while|then)\s+")
_WORD = re.compile(r"[A-Za-zÀ-ÿ][A-Za-zÀ-ÿ'-]+")
_STOPWORDS = frozenset(
    """a about above after again all also an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our ours out over own
    same she should so some such than that the their them then there these they this those
    through to too under until up very was we were what when where which while who whom why
    will with would you your film short video story""".split()  # noqa: SIM905
)
_FILLERS = (
    "Now a closer look at {topic}.",
    "There is more to {topic} than meets the eye.",
    "Take a moment to think about {topic}.",
)
_MOTIONS = ("Slow pan", "Gentle drift", "Slow diagonal glide", "Soft sweep")


def _phrases(brief: str, wanted: int) -> list[str]:
    """The brief's sentences, split further at commas or 'and' while there are fewer than scenes."""
    phrases = [part.strip() for part in _SENTENCE_END.split(brief.strip()) if part.strip()]
    while len(phrases) < wanted:
        splittable = [i for i, phrase in enumerate(phrases) if _split_in_two(phrase)]
        if not splittable:
            break
        longest = max(splittable, key=lambda i: len(phrases[i]))
        phrases[longest : longest + 1] = _split_in_two(phrases[longest]) or []
    return [_sentence(phrase) for phrase in phrases]


def _split_in_two(phrase: str) -> list[str] | None:
    """Split at the split point nearest the middle, if that leaves two real phrases."""
    points = list(_SPLIT_POINT.finditer(phrase))
    if not points:
        return None
    best = min(points, key=lambda match: abs(match.start() - len(phrase) / 2))
    head, tail = phrase[: best.start()].strip(), phrase[best.end() :].strip()
    if len(head.split()) < 2 or len(tail.split()) < 2:
        return None
    return [head, tail]


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip(" ,;:—\u2013-")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…\"'”" else f"{text}."


def _keywords(text: str, limit: int = 6) -> list[str]:
    words = [word.lower() for word in _WORD.findall(text)]
    counts = Counter(word for word in words if word not in _STOPWORDS)
    first_seen = {word: position for position, word in reversed(list(enumerate(words)))}
    ranked = sorted(counts, key=lambda word: (-counts[word], first_seen[word]))
    return ranked[:limit]


def _narration(spec: ProjectSpec, index: int, group: list[str], keywords: list[str]) -> str:
    title = spec.title.strip().rstrip(".")
    last = index == spec.scene_count - 1
    parts = [" ".join(group)]
    if index == 0:
        parts.insert(0, f"This is {title}." if title else "")
    elif not group and not last:
        # The most frequent word of the brief is most likely its subject.
        topic = keywords[0] if keywords else title
        parts = [_FILLERS[index % len(_FILLERS)].format(topic=topic)]
    if last and index > 0:
        parts.append(f"And that brings {title} to a close." if title else "And that is the story.")
    return " ".join(part for part in parts if part)


def _visual(spec: ProjectSpec, index: int, narration: str) -> str:
    palette = palette_for(spec.style)
    style = spec.style.strip() or "clean, simple"
    words = narration.split()
    opening = " ".join(words[:6]) + ("…" if len(words) > 6 else "")
    return (
        f"{_MOTIONS[index % len(_MOTIONS)]} across a {palette.name} gradient with soft glowing "
        f"light, in a {style} style; the words “{opening}” fade in line by line over a "
        f"dark panel, with a “Scene {index + 1}/{spec.scene_count}” caption and a thin "
        "progress line along the bottom."
    )


def _tidy(scene: Scene) -> Scene:
    return replace(
        scene, narration=_sentence(scene.narration), visual=" ".join(scene.visual.split())
    )


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
class _Look:
    """What a scene's frames share, drawn once: the frames only move and fade these."""

    background: Image.Image
    pan: tuple[float, float, float, float]  # window start and end, as shares of the spare room
    panel: Layer | None
    lines: tuple[Layer, ...]
    rise: int
    caption: Layer
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
    panel_alpha, line_alphas = _text_alphas(t, seconds, len(look.lines))
    if look.panel is not None:
        _paste(frame, look.panel, panel_alpha)
    for (image, mask, (x, y)), alpha in zip(look.lines, line_alphas, strict=True):
        _paste(frame, (image, mask, (x, y + round((1 - alpha) * look.rise))), alpha)
    _paste(frame, look.caption, 1.0)
    done = min((scene.index + share) / look.scene_total, 1.0)
    if done > 0:
        bar_top = size[1] - look.bar_height
        ImageDraw.Draw(frame).rectangle(
            (0, bar_top, round(size[0] * done) - 1, size[1] - 1), fill=look.accent
        )
    return frame


def _text_alphas(t: float, seconds: float, lines: int) -> tuple[float, list[float]]:
    """The panel fades in, then the lines one after another; all fade out at the very end."""
    fade = min(0.4, seconds * 0.15)
    start = min(0.2, seconds * 0.05)
    stagger = min(0.3, seconds * 0.35 / max(lines, 1))
    fade_out = _ramp(seconds - t - 1 / RENDER_FPS, min(0.3, seconds * 0.08))
    panel = _ramp(t - start, fade) * fade_out
    texts = [_ramp(t - start - fade / 2 - k * stagger, fade) * fade_out for k in range(lines)]
    return panel, texts


def _ramp(elapsed: float, length: float) -> float:
    return min(max(elapsed / length, 0.0), 1.0)


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


def _paste(frame: Image.Image, layer: Layer, alpha: float) -> None:
    image, mask, position = layer
    if alpha <= 0:
        return
    if alpha < 1:
        mask = mask.point(_fade_table(round(alpha * 64)))
    frame.paste(image, position, mask)


@lru_cache(maxsize=65)
def _fade_table(level: int) -> list[int]:
    return [value * level // 64 for value in range(256)]


@lru_cache(maxsize=64)
def _font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=pixels)


@lru_cache(maxsize=4)
def _look(spec: ProjectSpec, scene: Scene, size: tuple[int, int]) -> _Look:
    width, height = size
    unit = min(width, height)
    palette = palette_for(spec.style)
    seed = _stable_int(f"{spec.style.strip().lower()}|{scene.index}")
    lines, font_pixels = _layout(scene.narration, size)
    scene_total = max(spec.scene_count, scene.index + 1)
    caption = f"Scene {scene.index + 1}/{scene_total}"
    if spec.title.strip():
        caption = _fit(
            f"{caption} · {spec.title.strip()}", _font(max(9, round(unit * 0.03))), width * 0.8
        )
    return _Look(
        background=_background(palette, scene.index, seed, size),
        pan=_PANS[scene.index % len(_PANS)],
        panel=_panel(lines, font_pixels, size),
        lines=tuple(_line_layers(lines, font_pixels, size)),
        rise=round(font_pixels * 0.4),
        caption=_text_layer(caption, max(9, round(unit * 0.03)), (round(unit * 0.045),) * 2),
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


def _layout(text: str, size: tuple[int, int]) -> tuple[list[str], int]:
    """Wrap the narration, shrinking the font until it fits the middle of the frame."""
    width, height = size
    unit = min(width, height)
    largest, smallest = max(10, round(unit * 0.062)), max(8, round(unit * 0.036))
    pixels = largest
    while True:
        font = _font(pixels)
        lines = _wrap(text, font, width * 0.8)
        room = max(1, int(height * 0.55 // _line_height(pixels)))
        if len(lines) <= room or pixels <= smallest:
            break
        pixels = max(smallest, round(pixels * 0.9))
    if len(lines) > room:
        lines = [*lines[: room - 1], _fit(" ".join(lines[room - 1 :]), font, width * 0.8)]
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


def _line_layers(lines: list[str], pixels: int, size: tuple[int, int]) -> list[Layer]:
    width, height = size
    line_height = _line_height(pixels)
    top = (height - line_height * len(lines)) // 2
    layers = []
    for k, line in enumerate(lines):
        image, mask, _ = _text_layer(line, pixels, (0, 0))
        layers.append((image, mask, ((width - image.width) // 2, top + k * line_height)))
    return layers


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


def _panel(lines: list[str], pixels: int, size: tuple[int, int]) -> Layer | None:
    """A translucent dark card behind the text, so it reads over any colour."""
    if not lines:
        return None
    width, height = size
    font = _font(pixels)
    pad = round(pixels * 0.7)
    panel_width = min(width, round(max(font.getlength(line) for line in lines)) + 2 * pad)
    panel_height = _line_height(pixels) * len(lines) + 2 * pad
    mask = Image.new("L", (panel_width, panel_height), 0)
    ImageDraw.Draw(mask).rounded_rectangle(
        (0, 0, panel_width - 1, panel_height - 1), radius=round(pixels * 0.5), fill=120
    )
    image = Image.new("RGB", (panel_width, panel_height), (8, 8, 18))
    return image, mask, ((width - panel_width) // 2, (height - panel_height) // 2)
