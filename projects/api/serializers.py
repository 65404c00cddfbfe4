"""Input serializers validate; output serializers only describe (bodies come from the model)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from projects.models import AspectRatio, Status, Step

# The largest seq (or count) a PositiveBigIntegerField holds: a signed 64-bit column.
# A query number above it is refused with a 400, never sent to the database.
MAX_SEQ = 2**63 - 1
MAX_SCENES = 12


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know, so a typo or a read-only field is an error, not a no-op."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: ["This field is not accepted here."] for name in unknown}
                )
        return super().to_internal_value(data)


class BriefSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200)
    brief = serializers.CharField(min_length=10, max_length=2000)
    aspectRatio = serializers.ChoiceField(
        choices=AspectRatio.choices, source="aspect_ratio", default=AspectRatio.WIDE
    )
    sceneCount = serializers.IntegerField(
        min_value=1, max_value=MAX_SCENES, source="scene_count", default=4
    )
    secondsPerScene = serializers.IntegerField(
        min_value=2, max_value=10, source="seconds_per_scene", default=4
    )
    style = serializers.CharField(max_length=100, allow_blank=True, default="")


class SceneSerializer(StrictSerializer):
    index = serializers.IntegerField(min_value=0)
    narration = serializers.CharField(max_length=1000)
    visual = serializers.CharField(max_length=1000)
    seconds = serializers.FloatField(min_value=1, max_value=20)


class ScriptSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200)
    scenes = SceneSerializer(many=True, allow_empty=False, max_length=MAX_SCENES)

    def validate_scenes(self, scenes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if [scene["index"] for scene in scenes] != list(range(len(scenes))):
            raise serializers.ValidationError("Scene indexes must run 0, 1, 2, … in order.")
        return scenes


class ScriptEditSerializer(StrictSerializer):
    scriptData = ScriptSerializer()


class LogQuerySerializer(StrictSerializer):
    # Bounded like a database integer, so a 20-digit offset is a 400, not an overflow.
    offset = serializers.IntegerField(min_value=0, max_value=2**63 - 1, default=0)


class LogSerializer(serializers.Serializer):
    lines = serializers.ListField(child=serializers.CharField())
    nextOffset = serializers.IntegerField()


class HistoryQuerySerializer(StrictSerializer):
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
        child=serializers.ListField(child=serializers.CharField()), required=False
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


class ProjectSerializer(StatusSerializer):
    """A project: its brief and its status object; bodies come from `VideoProject.to_dict`."""

    title = serializers.CharField()
    brief = serializers.CharField()
    aspectRatio = serializers.ChoiceField(choices=AspectRatio.choices)
    sceneCount = serializers.IntegerField()
    secondsPerScene = serializers.IntegerField()
    style = serializers.CharField()
