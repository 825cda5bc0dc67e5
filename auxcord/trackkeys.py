"""What identifies a track, defined once for the events and the aggregates.

A track with a Spotify id is that id. A local file has none, so it is its artist's and its
name's case-folded text (:meth:`str.casefold`: ``"Straße"`` and ``"STRASSE"`` are one track):
``local:artist|name``. :attr:`auxcord.events.ListenEvent.track_key` names a play with it (in
its event id); :func:`analytics.daily.track_key` groups the aggregates by it, folding in Spark
with :func:`casefold_table`, so both give the same key for every name.
"""

from __future__ import annotations

import sys
from functools import cache

LOCAL_PREFIX = "local:"
LOCAL_SEPARATOR = "|"


def local_track_key(artist_name: str, track_name: str) -> str:
    """The key of a local file: ``local:`` and its case-folded artist and name."""
    return f"{LOCAL_PREFIX}{artist_name.casefold()}{LOCAL_SEPARATOR}{track_name.casefold()}"


@cache
def casefold_table() -> tuple[dict[str, str], dict[str, str]]:
    """:meth:`str.casefold` as a table of this Python's Unicode: the characters it maps to one
    other character, and those it maps to several (``"ß"`` to ``"ss"``).

    Case folding maps each character on its own, whatever surrounds it, so applying the table
    character by character folds a text exactly as :meth:`str.casefold` does; Spark does it
    with ``translate`` and ``replace`` instead of its ``lower``, which differs for ``"ß"``."""
    single: dict[str, str] = {}
    several: dict[str, str] = {}
    for point in range(sys.maxunicode + 1):
        if 0xD800 <= point <= 0xDFFF:  # surrogates: never characters of a text
            continue
        char = chr(point)
        folded = char.casefold()
        if folded != char:
            (single if len(folded) == 1 else several)[char] = folded
    return single, several
