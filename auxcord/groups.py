"""Groups of friends and their invitations: the only thing that decides who sees whose listening.

A group document is ``{_id, name, owner, members, created_at}``. Every dashboard page about a
group asks :meth:`GroupStore.for_member` first, and a group someone is not in looks exactly like
one that does not exist.

Invitations are links. The link carries a random token; MongoDB keeps only its SHA-256, so a
database dump cannot be turned into working invitations, and a TTL index removes expired ones.
A link works for anyone who has it, so removing a member, or a member leaving, revokes every
open invitation of the group: whoever kept a link cannot use it to come back. Members see the
open links on the members page; the owner (and each link's creator) can revoke them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database

from auxcord import indexes
from auxcord.errors import AuxcordError
from auxcord.names import Collection

INVITE_LIFETIME = timedelta(days=7)
MAX_GROUP_NAME = 60
MAX_MEMBERS = 50


class GroupError(AuxcordError):
    """A group action that cannot be done, with a message to show as it is."""


@dataclass(frozen=True)
class Group:
    group_id: str
    name: str
    owner: str
    members: tuple[str, ...]

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Group:
        return cls(
            group_id=str(document["_id"]),
            name=str(document.get("name") or document["_id"]),
            owner=str(document.get("owner") or ""),
            members=tuple(str(member) for member in document.get("members", [])),
        )


@dataclass(frozen=True)
class Invite:
    token: str
    group_id: str
    expires_at: datetime


@dataclass(frozen=True)
class OpenInvite:
    """An invitation that still works, as members see it: never its token."""

    invite_id: str
    created_by: str
    created_at: datetime | None
    expires_at: datetime


def _aware(moment: datetime) -> datetime:
    """pymongo returns naive UTC datetimes."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def clean_group_name(name: str) -> str:
    """A group name as stored: trimmed, single-spaced, 1 to 60 characters."""
    cleaned = " ".join(name.split())
    if not cleaned:
        raise GroupError("Give the group a name.")
    if len(cleaned) > MAX_GROUP_NAME:
        raise GroupError(f"Keep the group name to {MAX_GROUP_NAME} characters.")
    return cleaned


class GroupStore:
    """Groups and invitations in MongoDB."""

    def __init__(self, database: Database[dict[str, Any]]) -> None:
        self.groups = database[Collection.GROUPS]
        self.invites = database[Collection.INVITES]

    def ensure_indexes(self) -> None:
        indexes.ensure_indexes(self.groups.database, Collection.GROUPS, Collection.INVITES)

    def create(self, name: str, owner: str) -> Group:
        document = {
            "_id": secrets.token_urlsafe(9),
            "name": clean_group_name(name),
            "owner": owner,
            "members": [owner],
            "created_at": datetime.now(UTC),
        }
        self.groups.insert_one(document)
        return Group.from_document(document)

    def get(self, group_id: str) -> Group | None:
        found = self.groups.find_one({"_id": group_id})
        return Group.from_document(found) if found else None

    def for_member(self, group_id: str, user_id: str | None) -> Group | None:
        """The group, if ``user_id`` belongs to it; otherwise ``None``, as if it did not exist."""
        if not user_id:
            return None
        found = self.groups.find_one({"_id": group_id, "members": user_id})
        return Group.from_document(found) if found else None

    def groups_of(self, user_id: str) -> list[Group]:
        found = self.groups.find({"members": user_id}).sort("name", ASCENDING)
        return [Group.from_document(document) for document in found]

    def invite(self, group: Group, by: str, now: datetime | None = None) -> Invite:
        """A new invitation link token for ``group``; only members may invite."""
        if by not in group.members:
            raise GroupError("Only members can invite to a group.")
        token = secrets.token_urlsafe(24)
        created_at = now or datetime.now(UTC)
        expires_at = created_at + INVITE_LIFETIME
        self.invites.insert_one(
            {
                "_id": _token_hash(token),
                "group_id": group.group_id,
                "created_by": by,
                "created_at": created_at,
                "expires_at": expires_at,
            }
        )
        return Invite(token=token, group_id=group.group_id, expires_at=expires_at)

    def invited_group(self, token: str, now: datetime | None = None) -> Group | None:
        """The group an invitation token leads to, while it is valid: not expired, and made by
        someone who is still a member (a link made by a member being removed, in the moment
        of the removal, dies with their membership)."""
        invite = self.invites.find_one({"_id": _token_hash(token)})
        if invite is None or _aware(invite["expires_at"]) <= (now or datetime.now(UTC)):
            return None
        group = self.get(str(invite["group_id"]))
        if group is None or invite.get("created_by") not in group.members:
            return None
        return group

    def open_invites(self, group: Group, now: datetime | None = None) -> list[OpenInvite]:
        """The group's invitations that still work, newest first."""
        found = self.invites.find(
            {"group_id": group.group_id, "expires_at": {"$gt": now or datetime.now(UTC)}}
        ).sort("expires_at", -1)
        return [
            OpenInvite(
                invite_id=str(invite["_id"]),
                created_by=str(invite.get("created_by") or ""),
                created_at=_aware(invite["created_at"]) if invite.get("created_at") else None,
                expires_at=_aware(invite["expires_at"]),
            )
            for invite in found
        ]

    def revoke_invite(self, group: Group, by: str, invite_id: str) -> None:
        """Revoke one invitation of ``group``: its owner may revoke any, a member their own."""
        query: dict[str, Any] = {"_id": invite_id, "group_id": group.group_id}
        if by != group.owner:
            query["created_by"] = by
        if self.invites.delete_one(query).deleted_count == 0:
            raise GroupError("That invitation is already gone, or not yours to revoke.")

    def _revoke_all_invites(self, group: Group) -> None:
        self.invites.delete_many({"group_id": group.group_id})

    def join(self, token: str, user_id: str, now: datetime | None = None) -> Group:
        group = self.invited_group(token, now)
        if group is None:
            raise GroupError(
                "This invitation is invalid or has expired. Ask a member for a new link."
            )
        if user_id in group.members:
            return group
        updated = self.groups.find_one_and_update(
            {"_id": group.group_id, f"members.{MAX_MEMBERS - 1}": {"$exists": False}},
            {"$addToSet": {"members": user_id}},
            return_document=ReturnDocument.AFTER,
        )
        if updated is None:
            raise GroupError(f"This group is full ({MAX_MEMBERS} members).")
        return Group.from_document(updated)

    def leave(self, group: Group, user_id: str) -> None:
        """Leave ``group``. An owner who leaves hands the group to the longest-standing member;
        the last member to leave deletes it. Either way the group's open invitations go."""
        remaining = [member for member in group.members if member != user_id]
        if not remaining:
            self.groups.delete_one({"_id": group.group_id})
        else:
            owner = group.owner if group.owner != user_id else remaining[0]
            self.groups.update_one(
                {"_id": group.group_id}, {"$pull": {"members": user_id}, "$set": {"owner": owner}}
            )
        self._revoke_all_invites(group)

    def remove_member(self, group: Group, by: str, member: str) -> None:
        if by != group.owner:
            raise GroupError("Only the group's owner can remove members.")
        if member == by:
            raise GroupError("To leave your own group, use Leave.")
        if member not in group.members:
            raise GroupError("That person is not in this group.")
        self.groups.update_one({"_id": group.group_id}, {"$pull": {"members": member}})
        self._revoke_all_invites(group)
