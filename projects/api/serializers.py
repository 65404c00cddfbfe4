"""Input serializers validate; output serializers only describe (bodies come from the model).

The fields a person fills in on the creator page say what is wrong in the
page's own labels ("Scenes must be a whole number from 1 to 12."): each error
message is a whole sentence, the same for every way the value can be wrong.
The error body keeps the API's field names as the keys of `fields`
(projects/api/errors.py).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.settings import api_settings
from rest_framework.utils import html

from projects.models import AspectRatio, Status, Step

# The largest seq (or count) a PositiveBigIntegerField holds: a signed 64-bit column.
# A query number above it is refused with a 400, never sent to the database.
MAX_SEQ = 2**63 - 1
MAX_SCENES = 12
MAX_BRIEF = 2000
MIN_BRIEF = 10


# Every sentence made by `plain` names what it is about: an error body shows it
# as its `detail` as it is. Any other message (DRF's own, a validator's) is shown
# after the name of its field (projects/api/errors.py).
PLAIN_MESSAGES: set[str] = set()
# A sentence made at request time (it names what the person sent) is raised with this
# code instead of joining PLAIN_MESSAGES, which would grow with every request.
PLAIN_CODE = "plain"


def plain(messages: dict[str, str]) -> dict[str, str]:
    PLAIN_MESSAGES.update(messages.values())
    return messages


def whole_number(label: str, low: int, high: int) -> dict[str, str]:
    sentence = f"{label} must be a whole number from {low} to {high}."
    codes = ("required", "null", "invalid", "min_value", "max_value", "max_string_length")
    return plain(dict.fromkeys(codes, sentence))


def number(label: str, low: int, high: int) -> dict[str, str]:
    sentence = f"{label} must be a number from {low} to {high}."
    codes = ("required", "null", "invalid", "min_value", "max_value", "max_string_length")
    return plain(dict.fromkeys((*codes, "overflow"), sentence))


def text(label: str, max_length: int, *, required: bool = True) -> dict[str, str]:
    """A text field's sentences; one that may be empty is refused only for its length or type."""
    kind = f"{label} must be text"
    messages = {
        "invalid": f"{kind}.",
        "null": f"{label} cannot be empty." if required else f"{kind} (or left empty).",
        "max_length": f"{label} must be at most {max_length:,} characters.",
    }
    if required:
        messages |= dict.fromkeys(("required", "blank"), f"{label} cannot be empty.")
    return plain(messages)


# What an HTML form of the browsable API sends beside its fields.
FORM_ONLY_FIELDS = frozenset({"csrfmiddlewaretoken"})


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo or a read-only field is an error, not a no-op."""

    # Names accepted beside the fields, and ignored.
    passes: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(self.fields) | self.passes
            if html.is_html_input(data):
                known |= FORM_ONLY_FIELDS
            unknown = sorted(set(data) - known)
            if unknown:
                raise serializers.ValidationError(
                    {name: ["This field is not accepted here."] for name in unknown}
                )
        return super().to_internal_value(data)


BRIEF_TOO_SHORT = f"The brief must be at least {MIN_BRIEF} characters long."
BRIEF_TOO_LONG = f"The brief must be at most {MAX_BRIEF:,} characters long."
RATIOS = ", ".join(AspectRatio.values[:-1]) + f" or {AspectRatio.values[-1]}"


# `label`, `initial` and `style` are for the browsable API's form (projects/api/browsable.py):
# the creator page's labels, and the defaults already filled in.
class BriefSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200, initial="", error_messages=text("Title", 200))
    brief = serializers.CharField(
        min_length=MIN_BRIEF,
        max_length=MAX_BRIEF,
        initial="",
        style={"base_template": "textarea.html", "rows": 5},
        error_messages=plain(
            {"invalid": "The brief must be text.", "max_length": BRIEF_TOO_LONG}
            | dict.fromkeys(("required", "blank", "null", "min_length"), BRIEF_TOO_SHORT)
        ),
    )
    aspectRatio = serializers.ChoiceField(
        choices=AspectRatio.choices,
        source="aspect_ratio",
        default=AspectRatio.WIDE,
        initial=AspectRatio.WIDE,
        label="Aspect ratio",
        error_messages=plain(
            dict.fromkeys(("required", "null", "invalid_choice"), f"Aspect ratio must be {RATIOS}.")
        ),
    )
    sceneCount = serializers.IntegerField(
        min_value=1,
        max_value=MAX_SCENES,
        source="scene_count",
        default=4,
        initial=4,
        label="Scenes",
        error_messages=whole_number("Scenes", 1, MAX_SCENES),
    )
    secondsPerScene = serializers.IntegerField(
        min_value=2,
        max_value=10,
        source="seconds_per_scene",
        default=4,
        initial=4,
        label="Seconds per scene",
        error_messages=whole_number("Seconds per scene", 2, 10),
    )
    style = serializers.CharField(
        max_length=100,
        allow_blank=True,
        default="",
        initial="",
        error_messages=text("Style", 100, required=False),
    )


class SceneSerializer(StrictSerializer):
    index = serializers.IntegerField(
        min_value=0,
        max_value=MAX_SCENES - 1,
        error_messages=whole_number("The scene's index", 0, MAX_SCENES - 1),
    )
    narration = serializers.CharField(max_length=1000, error_messages=text("Narration", 1000))
    visual = serializers.CharField(max_length=1000, error_messages=text("Visual", 1000))
    seconds = serializers.FloatField(
        min_value=1, max_value=20, error_messages=number("Seconds", 1, 20)
    )


# Shared by the list of scenes and each scene (DRF gives `many=True` fields' messages to both).
SCENES = plain(
    {
        "required": "The script needs at least one scene.",
        "empty": "The script needs at least one scene.",
        **dict.fromkeys(
            ("not_a_list", "null"),
            "The scenes must be a list, each scene with an index, narration, visual and seconds.",
        ),
        "max_length": f"A script has at most {MAX_SCENES} scenes.",
        "invalid": "Each scene must have an index, narration, visual and seconds.",
    }
)
SCENE_ORDER = "Scene indexes must run 0, 1, 2, … in order."
PLAIN_MESSAGES.add(SCENE_ORDER)


class ScriptSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200, error_messages=text("Video title", 200))
    scenes = SceneSerializer(
        many=True, allow_empty=False, max_length=MAX_SCENES, error_messages=SCENES
    )

    def validate_scenes(self, scenes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if [scene["index"] for scene in scenes] != list(range(len(scenes))):
            raise serializers.ValidationError(SCENE_ORDER)
        return scenes


class ScriptEditSerializer(StrictSerializer):
    scriptData = ScriptSerializer(
        error_messages=plain(
            dict.fromkeys(
                ("required", "null", "invalid"),
                "The script must have a title and a list of scenes.",
            )
        )
    )


class LogQuerySerializer(StrictSerializer):
    passes = frozenset({api_settings.URL_FORMAT_OVERRIDE})  # ?format=json|api: DRF's
    # Bounded like a database integer, so a 20-digit offset is a 400, not an overflow.
    offset = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)


class LogSerializer(serializers.Serializer):
    lines = serializers.ListField(child=serializers.CharField())
    nextOffset = serializers.IntegerField()


class HistoryQuerySerializer(StrictSerializer):
    passes = frozenset({api_settings.URL_FORMAT_OVERRIDE})
    after = serializers.IntegerField(min_value=0, max_value=MAX_SEQ, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=1000, default=100)


class PageQuerySerializer(serializers.Serializer):
    """`?page=&pageSize=` of a list; other query parameters (`format`) pass untouched."""

    page = serializers.RegexField(
        r"^(last|[1-9][0-9]{0,17})$",
        required=False,
        error_messages={"invalid": "A page is a whole number from 1 (or `last`)."},
    )
    pageSize = serializers.IntegerField(min_value=1, max_value=100, required=False)


class EventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["status", "progress", "log", "error"])
    payload = serializers.DictField()
    createdAt = serializers.DateTimeField()


class HistorySerializer(serializers.Serializer):
    events = EventSerializer(many=True)
    nextAfter = serializers.IntegerField(help_text="Pass as `after` to read on.")
    hasMore = serializers.BooleanField()
    version = serializers.IntegerField(help_text="The project's latest seq.")


class StatsSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["mine", "everyone"])
    total = serializers.IntegerField()
    byStatus = serializers.DictField(child=serializers.IntegerField())


class ActiveSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    byUser = serializers.ListField(child=serializers.DictField())
    byProject = serializers.ListField(child=serializers.DictField())


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    code = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Messages by field, named as the API names them; inside `scriptData` by "
        "path: `scriptData.title`, `scriptData.scenes`, `scriptData.scenes[2].seconds`.",
    )
    status = serializers.ChoiceField(choices=Status.choices, required=False)


class JobErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()


class PricesSerializer(serializers.Serializer):
    script = serializers.IntegerField()
    render = serializers.IntegerField(help_text="Follows the current script's length.")


class StatusSerializer(serializers.Serializer):
    """The status object (API.md); bodies come from `VideoProject.to_status_dict`."""

    id = serializers.UUIDField()
    title = serializers.CharField(help_text="The project's title, as its brief says.")
    status = serializers.ChoiceField(choices=Status.choices)
    progress = serializers.IntegerField(min_value=0, max_value=100)
    progressMessage = serializers.CharField()
    currentStep = serializers.ChoiceField(choices=Step.choices, allow_null=True)
    completedSteps = serializers.IntegerField()
    totalSteps = serializers.IntegerField()
    scriptData = ScriptSerializer(allow_null=True)
    videoUrl = serializers.CharField(allow_null=True)
    previousVideoUrl = serializers.CharField(
        allow_null=True, help_text="The last finished video while the project is not COMPLETED."
    )
    error = JobErrorSerializer(allow_null=True)
    attempt = serializers.IntegerField()
    version = serializers.IntegerField()
    createdAt = serializers.DateTimeField()
    updatedAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    completedAt = serializers.DateTimeField(allow_null=True)
    notified = serializers.BooleanField()
    prices = PricesSerializer(help_text="What starting each job costs now, in credits.")
    charged = serializers.IntegerField(
        help_text="What the current or last job cost, after any refund."
    )
    estimatedSecondsRemaining = serializers.IntegerField(
        allow_null=True,
        help_text="While a worker holds the job: about how many seconds it has left; "
        "null without a basis (no job of its kind has finished here yet).",
    )
    queuePosition = serializers.IntegerField(
        allow_null=True,
        help_text="While the job waits for a worker, its place in line (1 = next); else null.",
    )
    resumeDismissed = serializers.BooleanField(
        help_text="The owner said “Not now” to resuming the project as it is now "
        "(`POST projects/{id}/dismiss`); false again once it changes."
    )


class ProjectLinksSerializer(serializers.Serializer):
    """Absolute URLs; bodies come from `projects.api.browsable.project_links`."""

    self = serializers.URLField(help_text="The project (GET, PATCH, DELETE).")
    status = serializers.URLField(help_text="Its status object (GET; ETag, long-poll).")
    log = serializers.URLField(help_text="Its job log (GET `?offset=`).")
    history = serializers.URLField(help_text="Its event log (GET `?after=&limit=`, DELETE).")
    events = serializers.URLField(help_text="Its events as Server-Sent Events (GET).")
    video = serializers.URLField(help_text="Its last finished video (GET; 404 before one).")
    scenePreviews = serializers.ListField(
        child=serializers.URLField(), help_text="Each scene's preview, of the saved script."
    )
    script = serializers.URLField(help_text="POST: write the script; PATCH: edit it.")
    render = serializers.URLField(help_text="POST: render the video.")
    cancel = serializers.URLField(help_text="POST: cancel the running job.")
    duplicate = serializers.URLField(help_text="POST: copy into a new DRAFT.")
    dismiss = serializers.URLField(help_text="POST: “Not now”.")
    notified = serializers.URLField(help_text="POST: mark the finished job as told.")


class ProjectSerializer(StatusSerializer):
    """A project: its brief and its status object; bodies come from `VideoProject.to_dict`."""

    brief = serializers.CharField()
    aspectRatio = serializers.ChoiceField(choices=AspectRatio.choices)
    sceneCount = serializers.IntegerField()
    secondsPerScene = serializers.IntegerField()
    style = serializers.CharField()
    links = ProjectLinksSerializer(
        help_text="Where to find the project's pages and actions (the status object has none)."
    )
