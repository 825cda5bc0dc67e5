"""The versioned events every component shares, defined once.

A :class:`ListenEvent` is one finished play; a :class:`NowPlayingEvent` is a change in what a
user is playing. Producers build them, Kafka carries their JSON, the streaming job parses them
with the Spark schema derived here, and MongoDB and GCS store them. Because JSON, validation and
the Spark schema all come from the same pydantic model, they cannot drift apart.

Event ids are deterministic, so a play seen twice (two polls, a restart, an export overlapping
live polling) is the same event and is stored once downstream.
"""

from __future__ import annotations

import hashlib
import types
import typing
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from auxcord.errors import InvalidEvent
from auxcord.trackkeys import local_track_key

if TYPE_CHECKING:
    from pyspark.sql.types import DataType, StructType

SCHEMA_VERSION: Literal[1] = 1

# Spotify began in 2006; nothing was played before then, and nothing ends in the far future.
# Absurd timestamps come from broken clients and corrupt exports, so they are rejected early.
_EARLIEST_PLAY = datetime(2006, 1, 1, tzinfo=UTC)
_FUTURE_SLACK = timedelta(days=1)
_MAX_NAME = 1_000
_MAX_ID = 128
_MAX_DURATION_MS = 24 * 3600 * 1000


def _utc_ms(value: datetime) -> datetime:
    """Require an aware datetime, and normalise it to UTC with millisecond precision."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("must be timezone-aware (naive datetimes are ambiguous)")
    value = value.astimezone(UTC)
    if not _EARLIEST_PLAY <= value <= datetime.now(UTC) + _FUTURE_SLACK:
        raise ValueError(f"{value.isoformat()} is outside the plausible range (2006 to tomorrow)")
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``, the form Spotify and Spark both read."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


UtcTimestamp = Annotated[
    datetime, AfterValidator(_utc_ms), PlainSerializer(format_timestamp, when_used="json")
]
Name = Annotated[str, Field(min_length=1, max_length=_MAX_NAME)]
OptionalName = Annotated[str | None, Field(default=None, max_length=_MAX_NAME)]
Id = Annotated[str, Field(min_length=1, max_length=_MAX_ID)]
OptionalId = Annotated[str | None, Field(default=None, min_length=1, max_length=_MAX_ID)]
Millis = Annotated[int, Field(ge=0, le=_MAX_DURATION_MS)]

ListenSource = Literal["poll", "nowplaying", "import"]
ItemType = Literal["track", "episode"]
NowPlayingState = Literal["started", "paused", "resumed", "track_changed", "stopped"]
PlayingType = Literal["track", "episode", "ad", "unknown"]


class _Event(BaseModel):
    """JSON (de)serialisation, validation with reasons, and the Spark schema, for every event."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    schema_version: Literal[1] = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse and validate one event, raising :class:`InvalidEvent` with a one-line reason."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidEvent(describe_validation_error(exc)) from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Validate one event given as a dict, raising :class:`InvalidEvent`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidEvent(describe_validation_error(exc)) from None

    def to_json(self) -> bytes:
        """The event as compact UTF-8 JSON, the Kafka message value."""
        return self.model_dump_json().encode()

    def to_document(self) -> dict[str, Any]:
        """The event as a MongoDB document, keyed by its event id."""
        document = self.model_dump(mode="python")
        document["_id"] = document["event_id"]
        return document

    @classmethod
    def spark_schema(cls) -> StructType:
        """The Spark schema of this event's JSON, derived from the model's fields."""
        return _struct_of(cls)


class PlayContext(BaseModel):
    """Where a play was started from (a playlist, an album, an artist page)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Annotated[str, Field(min_length=1, max_length=64)]
    uri: Annotated[str, Field(min_length=1, max_length=_MAX_NAME)]


class ListenEvent(_Event):
    """One finished play of at least 30 s, from polling, the live feed or an export."""

    event_id: Annotated[str, Field(default="", max_length=64)]
    user_id: Id
    track_id: OptionalId
    """Spotify's track or episode id; ``None`` for local files."""
    track_name: Name
    artist_name: Name
    artist_id: OptionalId
    album_name: OptionalName
    album_id: OptionalId
    album_image_url: OptionalName
    duration_ms: Millis
    ms_played: Millis | None = None
    played_at: UtcTimestamp
    """The end of the play, in UTC, as Spotify reports it."""
    source: ListenSource
    item_type: ItemType = "track"
    is_local: bool = False
    context: PlayContext | None = None

    ID_FIELDS: ClassVar[tuple[str, ...]] = ("user_id", "track_key", "played_at_second")

    @property
    def track_key(self) -> str:
        """What identifies the track: its id, or for local files their case-folded names
        (:mod:`auxcord.trackkeys`)."""
        if self.track_id:
            return self.track_id
        return local_track_key(self.artist_name, self.track_name)

    @model_validator(mode="after")
    def _derive_event_id(self) -> Self:
        expected = listen_event_id(self.user_id, self.track_key, self.played_at)
        if not self.event_id:
            object.__setattr__(self, "event_id", expected)
        elif self.event_id != expected:
            raise ValueError(
                f"event_id {self.event_id!r} does not match the play it describes ({expected!r})"
            )
        return self


class NowPlayingEvent(_Event):
    """A change in what one user is playing, as the poller observed it."""

    event_id: Annotated[str, Field(default="", max_length=64)]
    user_id: Id
    state: NowPlayingState
    observed_at: UtcTimestamp
    """When the poller saw this state: the ordering key, so an older state never wins."""
    is_playing: bool
    playing_type: PlayingType | None = None
    track_id: OptionalId
    track_name: OptionalName
    artist_name: OptionalName
    album_name: OptionalName
    album_image_url: OptionalName
    progress_ms: Millis | None = None
    duration_ms: Millis | None = None
    started_at: UtcTimestamp | None = None
    """When the current item started playing, for "listening since"."""

    @model_validator(mode="after")
    def _derive_event_id(self) -> Self:
        expected = _digest(self.user_id, self.state, format_timestamp(self.observed_at))
        if not self.event_id:
            object.__setattr__(self, "event_id", expected)
        elif self.event_id != expected:
            raise ValueError(f"event_id {self.event_id!r} does not match the state it describes")
        return self


def _digest(*parts: str) -> str:
    # \x1f (unit separator) cannot appear in ids or ISO timestamps, so joins are unambiguous.
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def listen_event_id(user_id: str, track_key: str, played_at: datetime) -> str:
    """The deterministic id of a play.

    ``played_at`` counts in whole seconds: recently-played reports milliseconds but data exports
    only seconds, and the same play from both must get the same id. Two plays of one track by
    one user cannot end within the same second (a play lasts at least 30 s), so nothing real
    collides.
    """
    second = int(played_at.astimezone(UTC).timestamp())
    return _digest(user_id, track_key, str(second))


def describe_validation_error(error: ValidationError, limit: int = 3) -> str:
    """A one-line reason naming the offending fields, e.g. ``played_at: must be timezone-aware``."""
    reasons = []
    for item in error.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "event"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required"
        elif item["type"] == "extra_forbidden":
            message = "is not a known field"
        elif item["type"] == "literal_error" and where == "schema_version":
            message = (
                f"unknown schema version {item.get('input')!r} (this build reads {SCHEMA_VERSION})"
            )
        reasons.append(f"{where}: {message}")
    more = error.error_count() - limit
    if more > 0:
        reasons.append(f"and {more} more")
    return "; ".join(reasons)


def _struct_of(model: type[BaseModel]) -> StructType:
    from pyspark.sql.types import StructField, StructType

    fields = []
    for name, info in model.model_fields.items():
        data_type, nullable = _spark_type(info.annotation)
        fields.append(StructField(name, data_type, nullable=nullable or not info.is_required()))
    return StructType(fields)


def _spark_type(annotation: Any) -> tuple[DataType, bool]:
    """Map one field's annotation to a Spark type and whether it may be null."""
    from pyspark.sql import types as T

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _spark_type(args[0])
    if origin in (Union, types.UnionType):
        present = [arg for arg in args if arg is not type(None)]
        if len(present) != 1:
            raise TypeError(f"cannot map the union {annotation!r} to one Spark type")
        return _spark_type(present[0])[0], True
    if origin is Literal:
        return _spark_type(type(args[0]))
    if origin is list:
        element, nullable = _spark_type(args[0])
        return T.ArrayType(element, containsNull=nullable), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _struct_of(annotation), False
    simple: dict[Any, T.DataType] = {
        str: T.StringType(),
        int: T.LongType(),
        float: T.DoubleType(),
        bool: T.BooleanType(),
        datetime: T.TimestampType(),
    }
    if annotation in simple:
        return simple[annotation], False
    raise TypeError(f"no Spark type for {annotation!r}")
