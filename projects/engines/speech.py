"""Spoken narration with eSpeak NG, from the `espeakng-loader` wheel (the library and
its voice data ship inside it: nothing is downloaded at run time).

The library is driven through ctypes in its synchronous mode: `espeak_Synth`
returns once the text is spoken, having handed 16-bit mono PCM to our
callback buffer by buffer. It keeps global state, so one lock serialises its
use within a process (a worker renders one scene at a time anyway).

A scene's narration is spoken caption by caption, each starting when its
caption appears (or right after the one before, if that ran long), all at one
pace chosen so the whole fits the scene: the words heard are the words read.
"""

from __future__ import annotations

import ctypes
import math
import threading
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SAMPLE_WIDTH = 2  # bytes: eSpeak NG speaks 16-bit signed PCM
VOICE = b"en-us"
# Words a minute: eSpeak's default is 175; a little slower is easier to follow,
# and past ~340 its speech stops being clear, so it is never pushed further.
CALM_RATE = 165
FASTEST_RATE = 340
# Speech fills at most this share of the scene, so a scene never ends mid-word.
FILL = 0.94
# eSpeak ends each utterance with a pause; between captions the placement
# makes its own, so quieter edges than this are trimmed, all but a breath.
_QUIET = 256
_BREATH_SECONDS = 0.03
_MOST_READINGS = 6

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report a bad data path instead of exiting the worker
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1  # espeakRATE
_BUFFER_MS = 200

_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_lock = threading.Lock()


class SpeechUnavailable(Exception):
    """No synthesizer on this machine: the message says why, in a sentence."""


@dataclass(frozen=True)
class Line:
    """A piece of narration and when it should start, in seconds from the scene's start."""

    text: str
    start: float


@dataclass(frozen=True)
class Narration:
    """A scene's spoken track, exactly the scene's length."""

    pcm: bytes
    sample_rate: int
    words_per_minute: int
    spoken_seconds: float  # how long the speech itself lasts, pauses included
    cut_seconds: float  # speech that did not fit and was cut off at the end

    @property
    def seconds(self) -> float:
        return len(self.pcm) / SAMPLE_WIDTH / self.sample_rate

    def write_wav(self, path: Path) -> None:
        write_wav(path, self.pcm, self.sample_rate)


def unavailable_reason() -> str | None:
    """Why there is no narration on this machine, or None if the synthesizer works."""
    try:
        _synthesizer()
    except SpeechUnavailable as error:
        return str(error)
    return None


def narrate(
    lines: Sequence[Line],
    seconds: float,
    *,
    check: Callable[[], None] = lambda: None,
    on_progress: Callable[[float], None] = lambda fraction: None,
) -> Narration:
    """The lines spoken over a track of exactly `seconds`; raises SpeechUnavailable.

    Spoken at a calm pace if that fits, else faster, a step at a time, until
    it fits or reaches the fastest clear pace (then its end is cut). `check`
    is called between lines and may raise to stop; `on_progress` hears the
    share done, a reading at a time.
    """
    synthesizer = _synthesizer()
    sample_rate = synthesizer.sample_rate
    total = max(0, round(seconds * sample_rate))
    room = round(seconds * FILL * sample_rate)
    starts = [line.start for line in lines]
    rate = CALM_RATE
    for reading in range(1, _MOST_READINGS + 1):
        clips = []
        for line in lines:
            clips.append(synthesizer.speak(line.text, rate))
            check()
        track, end = _place(clips, starts, sample_rate)
        on_progress(reading / (reading + 1))
        if end <= room or rate >= FASTEST_RATE:
            break
        # Pauses between captions do not shrink with the pace: step at least 10.
        rate = min(FASTEST_RATE, max(rate + 10, math.ceil(rate * end / max(room, 1))))
    on_progress(1.0)
    return Narration(
        pcm=_fit_length(track, total, sample_rate),
        sample_rate=sample_rate,
        words_per_minute=rate,
        spoken_seconds=end / sample_rate,
        cut_seconds=max(0, end - total) / sample_rate,
    )


def write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    with wave.open(str(path), "wb") as track:
        track.setnchannels(1)
        track.setsampwidth(SAMPLE_WIDTH)
        track.setframerate(sample_rate)
        track.writeframes(pcm)


def _place(clips: list[bytes], starts: list[float], sample_rate: int) -> tuple[bytearray, int]:
    """Each clip at its start, or right after the previous one if that ran past it."""
    track = bytearray()
    end = 0
    for pcm, start in zip(clips, starts, strict=True):
        at = max(end, round(start * sample_rate))
        track.extend(bytes((at - end) * SAMPLE_WIDTH))
        track.extend(pcm)
        end = at + len(pcm) // SAMPLE_WIDTH
    return track, end


def _fit_length(track: bytearray, samples: int, sample_rate: int) -> bytes:
    """Pad with silence or cut to `samples`, fading the last 40 ms of a cut so it does not click."""
    size = samples * SAMPLE_WIDTH
    if len(track) <= size:
        return bytes(track) + bytes(size - len(track))
    cut = memoryview(track)[:size].cast("h")
    fade = min(len(cut), sample_rate // 25)
    for k in range(fade):
        position = len(cut) - fade + k
        cut[position] = cut[position] * (fade - k) // fade
    return cut.tobytes()


def _trim(pcm: bytes, keep: int) -> bytes:
    """The speech without the quiet before and after it, bar `keep` samples each side."""
    samples = memoryview(pcm).cast("h")
    first = next((k for k in range(len(samples)) if abs(samples[k]) > _QUIET), None)
    if first is None:
        return b""
    last = next(k for k in range(len(samples) - 1, -1, -1) if abs(samples[k]) > _QUIET)
    start, end = max(0, first - keep), min(len(samples), last + 1 + keep)
    return pcm[start * SAMPLE_WIDTH : end * SAMPLE_WIDTH]


class _Synthesizer:
    def __init__(self, library: ctypes.CDLL, sample_rate: int) -> None:
        self.library = library
        self.sample_rate = sample_rate
        self._buffers: list[bytes] = []
        # Kept on the instance: ctypes would free a callback nobody references.
        self._callback = _Callback(self._collect)
        library.espeak_SetSynthCallback(self._callback)

    def speak(self, text: str, words_per_minute: int) -> bytes:
        data = text.encode("utf-8")
        with _lock:
            self._buffers = []
            self.library.espeak_SetParameter(_RATE, words_per_minute, 0)
            status = self.library.espeak_Synth(
                data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            self.library.espeak_Synchronize()
            pcm, self._buffers = b"".join(self._buffers), []
        if status != 0:
            raise SpeechUnavailable(f"eSpeak NG could not speak a line (status {status}).")
        return _trim(pcm, round(self.sample_rate * _BREATH_SECONDS))

    def _collect(self, samples: ctypes._Pointer[ctypes.c_short], count: int, events: int) -> int:
        if samples and count > 0:
            self._buffers.append(ctypes.string_at(samples, count * SAMPLE_WIDTH))
        return 0  # go on


@lru_cache(maxsize=1)
def _synthesizer() -> _Synthesizer:
    """The process's one eSpeak NG, started on first use (a failure is tried again next time)."""
    try:
        import espeakng_loader
    except ImportError as error:
        raise SpeechUnavailable(
            "the espeakng-loader package (eSpeak NG) is not installed"
        ) from error
    try:
        library = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as error:
        raise SpeechUnavailable(f"eSpeak NG could not be loaded ({error})") from error
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_Synth.argtypes = [
        *(ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint),
        *(ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p),
    ]
    with _lock:
        sample_rate = library.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if sample_rate <= 0:
            raise SpeechUnavailable(f"eSpeak NG did not start with its data at {data_path}")
        if library.espeak_SetVoiceByName(VOICE) != 0:
            raise SpeechUnavailable(f"eSpeak NG has no {VOICE.decode()} voice")
    return _Synthesizer(library, sample_rate)
