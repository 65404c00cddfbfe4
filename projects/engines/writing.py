"""Writing a video's script from its brief, with no model.

The brief's own sentences carry the script: they are spread over the scenes
(split at commas and conjunctions while there are fewer sentences than scenes),
with a preamble such as "A short film about" dropped. Around them the writer
varies its own few words — how the title is introduced, how one scene leads to
the next, how the video closes — by a seed: the same brief and seed give the
same script, and a new seed (each script job has one) gives a different one.
A scene left without a sentence of its own returns to the brief's subject in
the brief's words ("night trains crossing Europe"), not to a single keyword.
Each scene's visual description follows from its narration and the style's palette.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

from projects.engines.base import ProjectSpec, Scene
from projects.engines.drawing import palette_for


def outline_scenes(spec: ProjectSpec, seed: int = 0) -> list[Scene]:
    """The scenes' narration and visuals, written from the spec's title and brief."""
    rng = random.Random(f"{seed}|{spec.title}|{spec.brief}|{spec.scene_count}")
    brief, subject = _without_preamble(spec.brief)
    phrases = _phrases(brief, spec.scene_count)
    words = _Words(spec.title, spec.brief)
    topic = subject or words.topic(brief)
    count = spec.scene_count
    scenes = []
    for index in range(count):
        # Ceiling bounds: with fewer phrases than scenes, the opening gets
        # one and the empty scenes fall at the end, where a closing fits.
        group = phrases[-(-index * len(phrases) // count) : -(-(index + 1) * len(phrases) // count)]
        writer = _SceneWriter(spec, index, words, topic, rng)
        narration = writer.narration(group)
        scenes.append(
            Scene(
                index=index,
                narration=narration,
                visual=_visual(spec, index, narration, rng),
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
# "A short film about night trains crossing Europe." → its subject, said as the brief says it.
_PREAMBLE = re.compile(
    r"^\s*(?:(?:this|here)\s+is\s+)?(?:(?:a|an|the|our|my)\s+)?"
    r"(?:(?:short|quick|brief|little|small|new|fun|simple)\s+)*"
    r"(?:film|video|clip|story|explainer|piece|reel|documentary|animation|movie)\s+"
    r"(?:is\s+)?(?:about|on|of|showing|that\s+shows|explaining|exploring)\s+",
    re.IGNORECASE,
)

# The writer's own words, chosen by the seed; {title}, {topic} and {body} are the brief's.
_OPENINGS = (
    "{title}. {body}",
    "Welcome to {title}. {body}",
    "{title} — {body_lower}",
    "Here is {title}. {body}",
    "{body} You are watching {title}.",
    "{title}, in a few moments. {body}",
)
_OPENINGS_UNTITLED = ("{body}", "Here it is. {body}", "Watch closely. {body}")
_LEAD_INS = ("", "", "Then", "Next,", "Meanwhile,", "After that,", "Along the way,", "Soon,")
_LAST_LEAD_INS = ("", "", "Finally,", "In the end,", "At last,")
_CLOSINGS = (
    "",
    "That is {title}.",
    "And that was {title}.",
    "So ends {title}.",
    "{title}: thanks for watching.",
)
_CLOSINGS_ALONE = (
    "And that was {title}.",
    "That is {title}, from start to finish.",
    "So ends {title}: {topic}, start to finish.",
    "{title} ends here. Thanks for watching.",
)
_CLOSINGS_UNTITLED = ("", "And that is the story of {topic}.", "That is {topic}, start to finish.")
_RETURNS = (
    "Stay with {topic} a moment longer.",
    "{topic_upper}, seen up close.",
    "There is more to {topic} than first appears.",
    "Look again at {topic}.",
    "Picture {topic} from another angle.",
)
_MOTIONS = (
    "Slow pan",
    "Gentle drift",
    "Slow diagonal glide",
    "Soft sweep",
    "Unhurried push-in",
    "Easy lateral track",
)
_LIGHTS = ("soft glowing light", "slow drifting glows", "pools of warm light", "gentle halos")


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
    # "…, and how cities can help": the second half stands as a sentence of its own.
    tail = re.sub(r"^(?:and|or)\s+", "", tail, flags=re.IGNORECASE)
    if len(head.split()) < 2 or len(tail.split()) < 2:
        return None
    return [head, tail]


def _sentence(text: str) -> str:
    text = " ".join(text.split()).strip(" ,;:—\u2013-")
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…\"'”" else f"{text}."


def _without_preamble(brief: str) -> tuple[str, str]:
    """The brief without a leading "A short film about", and the subject that followed it."""
    match = _PREAMBLE.match(brief)
    if not match:
        return brief, ""
    rest = brief[match.end() :]
    first = _SENTENCE_END.split(rest.strip(), maxsplit=1)[0]
    subject = first.strip().rstrip(".!?…")
    if not subject or len(subject.split()) > 8:
        subject = ""
    return (rest[:1].upper() + rest[1:]) if rest else brief, subject


class _Words:
    """What the writer knows about the brief's words: the main ones, and which are names."""

    def __init__(self, title: str, brief: str) -> None:
        words = [word.lower() for word in _WORD.findall(brief)]
        counts = Counter(word for word in words if word not in _STOPWORDS)
        in_title = {word.lower() for word in _WORD.findall(title)}
        first_seen = {word: position for position, word in reversed(list(enumerate(words)))}
        self.counts = counts
        # The brief says what the video is about; the title only breaks ties.
        self.keywords = sorted(
            counts, key=lambda word: (-counts[word], word not in in_title, first_seen[word])
        ) or [word for word in in_title if word not in _STOPWORDS]
        self.names = _names(brief)

    def topic(self, brief: str) -> str:
        """The main word with the words around it that matter too ("night trains")."""
        if not self.keywords:
            return ""
        words = _WORD.findall(brief)
        lowered = [word.lower() for word in words]
        main = self.keywords[0]
        if main not in lowered:
            return main
        at = lowered.index(main)
        start, end = at, at + 1
        while start > 0 and at - start < 2 and lowered[start - 1] not in _STOPWORDS:
            start -= 1
        # And the word after it when that is a main word too, or a plural ("honey bees").
        if end < len(words) and lowered[end] not in _STOPWORDS:
            following = lowered[end]
            if self.counts[following] > 1 or (len(following) > 3 and following.endswith("s")):
                end += 1
        return " ".join(self.as_written(word) for word in words[start:end])

    def as_written(self, word: str) -> str:
        """The word lower-cased unless the brief writes it as a name."""
        return word if word.lower() in self.names or word.isupper() else word.lower()

    def lower_first(self, sentence: str) -> str:
        """The sentence with its first word lower-cased, for following a lead-in or a dash."""
        first, _, rest = sentence.partition(" ")
        stripped = first.strip("\"'“(\u2018")
        if not stripped or stripped.lower() in self.names or stripped.isupper():
            return sentence
        return f"{first.replace(stripped, stripped.lower(), 1)} {rest}".strip()


def _names(text: str) -> set[str]:
    """Words the brief capitalises in mid-sentence: names ("Vienna", "Europe")."""
    names = set()
    for match in _WORD.finditer(text):
        before = text[: match.start()].rstrip()
        if before and before[-1] not in '.!?…"“:' and match.group()[0].isupper():
            names.add(match.group().lower())
    return names


class _SceneWriter:
    """One scene's narration: the brief's sentences, with the writer's few words around them."""

    def __init__(
        self, spec: ProjectSpec, index: int, words: _Words, topic: str, rng: random.Random
    ) -> None:
        self.title = spec.title.strip().rstrip(".")
        self.topic = topic or self.title
        self.index = index
        self.last = index == spec.scene_count - 1
        self.words = words
        self.rng = rng

    def narration(self, group: list[str]) -> str:
        body = " ".join(group)
        if self.index == 0:
            return self._opening(body)
        if not body:
            return self._closing_alone() if self.last else self._return()
        if self.last:
            return self._last(body)
        return self._lead_in(body, _LEAD_INS)

    def _opening(self, body: str) -> str:
        if not self.title:
            return self._fill(self.rng.choice(_OPENINGS_UNTITLED), body) or self._return()
        if not body:
            return f"{self.title}."
        return self._fill(self.rng.choice(_OPENINGS), body)

    def _last(self, body: str) -> str:
        text = self._lead_in(body, _LAST_LEAD_INS)
        closings = _CLOSINGS if self.title else _CLOSINGS_UNTITLED
        closing = self._fill(self.rng.choice(closings), body)
        return f"{text} {closing}".strip()

    def _closing_alone(self) -> str:
        if not self.title:
            return self._fill(self.rng.choice(_CLOSINGS_UNTITLED[1:]), "")
        return self._fill(self.rng.choice(_CLOSINGS_ALONE), "")

    def _return(self) -> str:
        return self._fill(self.rng.choice(_RETURNS), "")

    def _lead_in(self, body: str, lead_ins: tuple[str, ...]) -> str:
        lead_in = self.rng.choice(lead_ins)
        return f"{lead_in} {self.words.lower_first(body)}" if lead_in else body

    def _fill(self, shape: str, body: str) -> str:
        topic = self.topic
        text = shape.format(
            title=self.title,
            topic=topic,
            topic_upper=topic[:1].upper() + topic[1:],
            body=body,
            body_lower=self.words.lower_first(body),
        )
        return " ".join(text.split())


def _visual(spec: ProjectSpec, index: int, narration: str, rng: random.Random) -> str:
    palette = palette_for(spec.style)
    style = spec.style.strip() or "clean, simple"
    words = narration.split()
    opening = " ".join(words[:6]) + ("…" if len(words) > 6 else "")
    return (
        f"{rng.choice(_MOTIONS)} across a {palette.name} gradient with {rng.choice(_LIGHTS)}, "
        f"in a {style} style; the narration runs as captions low in the frame, a few words "
        f"at a time (“{opening}”), under a “Scene {index + 1}/{spec.scene_count}” label, "
        "with a thin progress line along the bottom."
    )
