"""Spotify Web API objects (track, episode, user, play history), shaped as the published schema.

Shaped as a development-mode app sees them since February 2026: no ``popularity``,
``available_markets``, ``label`` or ``followers`` anywhere, artists without ``genres``, and
``/me`` without ``country``, ``email`` and ``product`` (but with May 2026's ``account_id``).

Objects are built once per catalog item and cached: the simulator must answer thousands of
requests a second so that it is never the bottleneck of a pipeline benchmark.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

from devtools.simulator.model import KIND_EPISODE, KIND_LOCAL, World


class SpotifyObjects:
    """Builds the JSON objects for one world, with links pointing at ``base_url``."""

    def __init__(self, world: World, base_url: str) -> None:
        self.world = world
        self.base_url = base_url.rstrip("/")
        self.track = lru_cache(maxsize=None)(self._track)
        self.episode = lru_cache(maxsize=None)(self._episode)

    def _artist(self, index: int) -> dict[str, Any]:
        artist_id = self.world.catalog.artist_ids[index]
        return {
            "external_urls": {"spotify": f"https://open.spotify.com/artist/{artist_id}"},
            "href": f"{self.base_url}/v1/artists/{artist_id}",
            "id": artist_id,
            "name": self.world.catalog.artist_names[index],
            "type": "artist",
            "uri": f"spotify:artist:{artist_id}",
        }

    def album_image(self, album_id: str) -> list[dict[str, Any]]:
        url = f"{self.base_url}/_sim/art/{album_id}.svg"
        return [{"url": url, "height": 300, "width": 300}]

    def _album(self, index: int) -> dict[str, Any]:
        c = self.world.catalog
        album_id = c.album_ids[index]
        return {
            "album_type": c.album_type[index],
            "total_tracks": int(c.album_tracks[index]),
            "external_urls": {"spotify": f"https://open.spotify.com/album/{album_id}"},
            "href": f"{self.base_url}/v1/albums/{album_id}",
            "id": album_id,
            "images": self.album_image(album_id),
            "name": c.album_names[index],
            "release_date": c.album_release[index],
            "release_date_precision": "day",
            "type": "album",
            "uri": f"spotify:album:{album_id}",
            "artists": [self._artist(int(c.album_artist[index]))],
        }

    def _track(self, index: int) -> dict[str, Any]:
        c = self.world.catalog
        track_id = c.track_ids[index]
        return {
            "album": self._album(int(c.track_album[index])),
            "artists": [self._artist(int(c.track_artist[index]))],
            "disc_number": 1,
            "duration_ms": int(c.track_duration_ms[index]),
            "explicit": bool(c.track_explicit[index]),
            "external_ids": {"isrc": f"QZ{track_id[:10].upper()}"},
            "external_urls": {"spotify": f"https://open.spotify.com/track/{track_id}"},
            "href": f"{self.base_url}/v1/tracks/{track_id}",
            "id": track_id,
            "is_local": False,
            "is_playable": True,
            "name": c.track_names[index],
            "preview_url": None,
            "track_number": int(c.track_number[index]),
            "type": "track",
            "uri": f"spotify:track:{track_id}",
        }

    def local_track(self, index: int) -> dict[str, Any]:
        """A local file: Spotify sends null ids and hrefs for these."""
        item = self.world.item(KIND_LOCAL, index)
        return {
            "album": {
                "album_type": "album",
                "total_tracks": 0,
                "external_urls": {},
                "href": None,
                "id": None,
                "images": [],
                "name": item["album_name"],
                "release_date": "0000",
                "release_date_precision": "year",
                "type": "album",
                "uri": None,
                "artists": [],
            },
            "artists": [
                {
                    "external_urls": {},
                    "href": None,
                    "id": None,
                    "name": item["artist_name"],
                    "type": "artist",
                    "uri": None,
                }
            ],
            "disc_number": 0,
            "duration_ms": item["duration_ms"],
            "explicit": False,
            "external_ids": {},
            "external_urls": {},
            "href": None,
            "id": None,
            "is_local": True,
            "name": item["track_name"],
            "preview_url": None,
            "track_number": 0,
            "type": "track",
            "uri": f"spotify:local:{item['artist_name']}:{item['album_name']}:"
            f"{item['track_name']}:{item['duration_ms'] // 1000}".replace(" ", "+"),
        }

    def _episode(self, index: int) -> dict[str, Any]:
        c = self.world.catalog
        episode_id, show = c.episode_ids[index], int(c.episode_show[index])
        show_id = c.show_ids[show]
        images = self.album_image(show_id)
        return {
            "audio_preview_url": None,
            "description": "An episode.",
            "html_description": "<p>An episode.</p>",
            "duration_ms": int(c.episode_duration_ms[index]),
            "explicit": False,
            "external_urls": {"spotify": f"https://open.spotify.com/episode/{episode_id}"},
            "href": f"{self.base_url}/v1/episodes/{episode_id}",
            "id": episode_id,
            "images": images,
            "is_externally_hosted": False,
            "is_playable": True,
            "language": "en",
            "languages": ["en"],
            "name": c.episode_names[index],
            "release_date": c.episode_release[index],
            "release_date_precision": "day",
            "type": "episode",
            "uri": f"spotify:episode:{episode_id}",
            "show": {
                "copyrights": [],
                "description": "A show.",
                "html_description": "<p>A show.</p>",
                "explicit": False,
                "external_urls": {"spotify": f"https://open.spotify.com/show/{show_id}"},
                "href": f"{self.base_url}/v1/shows/{show_id}",
                "id": show_id,
                "images": images,
                "is_externally_hosted": False,
                "languages": ["en"],
                "media_type": "audio",
                "name": c.show_names[show],
                "publisher": c.show_publishers[show],
                "total_episodes": 20,
                "type": "show",
                "uri": f"spotify:show:{show_id}",
            },
        }

    def item(self, kind: int, index: int) -> dict[str, Any]:
        if kind == KIND_EPISODE:
            return self.episode(index)
        if kind == KIND_LOCAL:
            return self.local_track(index)
        return self.track(index)

    def context(self, index: int) -> dict[str, Any] | None:
        if index < 0:
            return None
        kind, uri = self.world.contexts[index]
        ident = uri.rsplit(":", 1)[1]
        return {
            "type": kind,
            "href": f"{self.base_url}/v1/{kind}s/{ident}",
            "external_urls": {"spotify": f"https://open.spotify.com/{kind}/{ident}"},
            "uri": uri,
        }

    def user(self, user_id: str) -> dict[str, Any]:
        user = self.world.by_id[user_id]
        return {
            "account_id": hashlib.sha256(f"account:{user_id}".encode()).hexdigest()[:22],
            "display_name": user.display_name,
            "explicit_content": {"filter_enabled": False, "filter_locked": False},
            "external_urls": {"spotify": f"https://open.spotify.com/user/{user_id}"},
            "href": f"{self.base_url}/v1/users/{user_id}",
            "id": user_id,
            "images": [],
            "type": "user",
            "uri": f"spotify:user:{user_id}",
        }
