"""Writing a video's script from its brief, with no model: the brief's sentences are
spread over the scenes (split at commas and conjunctions while there are fewer
sentences than scenes), the title opens and closes the script, a filler line
names the brief's main subject when a middle scene has nothing to say, and each
scene's visual description follows from its narration and the style's palette.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

from projects.engines.base import ProjectSpec, Scene
from projects.engines.drawing import palette_for


def outline_scenes(spec: ProjectSpec) -> list[Scene]:
    """The scenes' narration and visuals, written from the spec's title and brief."""
    phrases = _phrases(spec.brief, spec.scene_count)
    keywords = _keywords(f"{spec.title} {spec.brief}")
    count = spec.scene_count
    scenes = []
    for index in range(count):
        # Ceiling bounds: with fewer phrases than scenes, the opening gets
        # one and the empty scenes fall at the end, where a closing fits.
        group = phrases[-(-index * len(phrases) // count) : -(-(index + 1) * len(phrases) // count)]
        narration = _narration(spec, index, group, keywords)
        scenes.append(
            Scene(
                index=index,
                narration=narration,
                visual=_visual(spec, index, narration),
                seconds=float(spec.seconds_per_scene),
            )
        )
    return scenes


def tidy_scene(scene: Scene) -> Scene:
    """The scene with its narration as one clean sentence and its visual on one line."""
    return replace(
        scene, narration=_sentence(scene.narration), visual=" ".join(scene.visual.split())
    )


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
