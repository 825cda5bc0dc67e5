"""The published Spotify OpenAPI schema, with only the documented deviations of the real service.

``../shared/README.md`` lists them: ``context`` may be null, ``next``/``previous`` are null on the
last page, local files carry null ids and hrefs, and validators may drop the ``discriminator`` on
track-or-episode items. platform-facts adds one more the schema omits: currently-playing answers
204 with no body when nothing plays. Spotify's February 2026 changes for development-mode apps
add the last: albums and shows no longer carry ``available_markets``, which the schema requires.
Nothing else is loosened. The fields those changes removed must also be absent, which a schema
cannot say (it allows extra properties): :func:`removed_in_2026` checks that.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "spotify"
    / ("spotify-web-api.openapi.yml")
)


REMOVED_IN_2026: dict[str, frozenset[str]] = {
    "user": frozenset({"country", "email", "product", "followers"}),
    "track": frozenset({"popularity", "available_markets", "linked_from"}),
    "album": frozenset({"popularity", "label", "available_markets", "genres"}),
    "artist": frozenset({"genres", "followers", "popularity"}),
    "show": frozenset({"available_markets"}),
}
"""Fields a development-mode app no longer receives, by object ``type`` (February 2026)."""


def removed_in_2026(data: Any, path: str = "$") -> Iterator[str]:
    """The JSON paths in ``data`` of fields that development-mode apps no longer get."""
    if isinstance(data, dict):
        for name in sorted(REMOVED_IN_2026.get(str(data.get("type")), frozenset()) & set(data)):
            yield f"{path}.{name}"
        for key, value in data.items():
            yield from removed_in_2026(value, f"{path}.{key}")
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from removed_in_2026(value, f"{path}[{index}]")


def _nullable(schemas: dict[str, Any], name: str, *fields: str) -> None:
    for field in fields:
        prop = schemas[name]["properties"][field]
        # The validator ignores `nullable` beside `allOf`, so the referenced object is marked.
        refs = [part["$ref"] for part in prop.get("allOf", []) if "$ref" in part]
        target = schemas[refs[0].rsplit("/", 1)[1]] if len(refs) == 1 else prop
        target["nullable"] = True


@lru_cache(maxsize=1)
def _patched_spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        raise FileNotFoundError(f"the Spotify schema is expected at {SPEC_PATH} (../shared)")
    spec: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
    schemas = spec["components"]["schemas"]
    _nullable(schemas, "PlayHistoryObject", "context")
    _nullable(schemas, "CurrentlyPlayingObject", "context", "item")
    schemas["CurrentlyPlayingObject"]["properties"]["item"].pop("discriminator", None)
    _nullable(schemas, "CursorPagingObject", "next")
    # Local files: null ids, hrefs and uris on the track, its album and its artists.
    _nullable(schemas, "TrackObject", "id", "href")
    _nullable(schemas, "SimplifiedArtistObject", "id", "href", "uri")
    _nullable(schemas, "AlbumBase", "id", "href", "uri")
    for name in ("AlbumBase", "ShowBase"):
        schemas[name]["required"].remove("available_markets")
    spec["paths"]["/me/player/currently-playing"]["get"]["responses"]["204"] = {
        "description": "Nothing is playing."
    }
    return spec


def spotify_openapi(api_base: str) -> Any:
    """An openapi-core validator whose server is ``api_base`` (the simulator's /v1)."""
    from openapi_core import OpenAPI

    spec = dict(_patched_spec())
    spec["servers"] = [{"url": api_base}]
    return OpenAPI.from_dict(spec)
