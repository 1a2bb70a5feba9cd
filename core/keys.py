"""Keys of the data layer, and the validation every entry point applies to them.

A user key carries its home jurisdiction, like a regional-by-row primary key:
``eu:42`` is user 42 whose personal data lives under EU rules. The router, the storage
tiers and the simulator all parse keys here, so a malformed id is refused the same way
everywhere, before anything is written.

Examples:
    >>> UserKey.parse("eu:42")
    UserKey(jurisdiction='eu', user_id=42)
    >>> str(UserKey("us", 7))
    'us:7'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from geoshard.errors import InputError, did_you_mean

__all__ = [
    "DATA_CLASSES",
    "MAX_ID",
    "NON_PERSONAL_CLASSES",
    "PERSONAL_CLASSES",
    "DataKey",
    "UserKey",
    "validate_item_id",
]

#: Data classes that are personal data of a user: residency rules apply to them.
PERSONAL_CLASSES: tuple[str, ...] = ("user_features", "user_embeddings", "interactions", "sessions")
#: Data classes with no personal data: they may live in any region.
NON_PERSONAL_CLASSES: tuple[str, ...] = ("item_catalog", "item_embeddings", "aggregates")
DATA_CLASSES: tuple[str, ...] = PERSONAL_CLASSES + NON_PERSONAL_CLASSES

#: User ids are non-negative and fit a signed 64-bit column.
MAX_ID = 2**63 - 1
_USER_RE = re.compile(r"^([a-z][a-z0-9-]{0,39}):([0-9]{1,19})$")
_ITEM_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


@dataclass(frozen=True, order=True)
class UserKey:
    """A user, with the jurisdiction whose residency rules govern their personal data."""

    jurisdiction: str
    user_id: int

    def __post_init__(self) -> None:
        if isinstance(self.user_id, bool) or not isinstance(self.user_id, int):
            raise InputError(f"user id {self.user_id!r} must be an integer in [0, {MAX_ID}]")
        if not 0 <= self.user_id <= MAX_ID:
            raise InputError(
                f"user id {self.user_id} is out of range; use an integer in [0, {MAX_ID}]"
            )
        if not isinstance(self.jurisdiction, str) or not re.match(
            r"^[a-z][a-z0-9-]{0,39}$", self.jurisdiction
        ):
            raise InputError(
                f"jurisdiction {self.jurisdiction!r} in a user key is malformed; "
                "use lower-case letters, digits and '-' such as 'eu'"
            )

    @classmethod
    def parse(cls, text: str) -> UserKey:
        """Parse ``'<jurisdiction>:<id>'``.

        Raises:
            InputError: naming the bad value and the expected form.
        """
        if not isinstance(text, str):
            raise InputError(f"user key {text!r} must be a string like 'eu:42'")
        m = _USER_RE.match(text)
        if not m:
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise InputError(
                f"user key '{shown}' is malformed; expected "
                "'<jurisdiction>:<non-negative integer>' such as 'eu:42'"
            )
        uid = int(m.group(2))
        return cls(m.group(1), uid)

    def __str__(self) -> str:
        return f"{self.jurisdiction}:{self.user_id}"


def validate_item_id(item_id: object) -> str:
    """Return ``item_id`` when it is a valid item id, else raise :class:`InputError`.

    Item ids are 1 to 128 characters of ``A-Z a-z 0-9 _ . -``.
    """
    if not isinstance(item_id, str) or not _ITEM_RE.match(item_id):
        shown = (
            repr(item_id)
            if not isinstance(item_id, str) or len(item_id) <= 60
            else repr(item_id[:57] + "...")
        )
        raise InputError(
            f"item id {shown} is malformed; use 1 to 128 characters of "
            "letters, digits, '_', '.' or '-'"
        )
    return item_id


@dataclass(frozen=True)
class DataKey:
    """One datum of the data layer: its class and whose it is.

    For a personal class ``owner`` is a :class:`UserKey`; for a non-personal class it is an
    item id or an aggregate name (``jurisdiction`` is then None and any region may hold it).
    Both are checked here, so no tier can be handed personal data without its
    jurisdiction: ``DataKey("user_features", "eu:42")`` (a string, not a user key) would
    skip every residency check, and is refused.

    Raises:
        InputError: an unknown data class (with the closest name), a personal class whose
            owner is not a :class:`UserKey`, or a malformed item id.

    Examples:
        >>> DataKey("user_features", UserKey.parse("eu:42")).jurisdiction
        'eu'
        >>> DataKey("user_features", "eu:42")
        Traceback (most recent call last):
        ...
        geoshard.errors.InputError: owner 'eu:42' of personal data class 'user_features' must be a UserKey; use DataKey('user_features', UserKey.parse('eu:42'))
    """

    data_class: str
    owner: UserKey | str

    def __post_init__(self) -> None:
        dc = self.data_class
        if dc not in DATA_CLASSES:
            raise InputError(
                f"data class {dc!r} is unknown{did_you_mean(str(dc), DATA_CLASSES)}; "
                f"use one of {', '.join(DATA_CLASSES)}"
            )
        if dc in PERSONAL_CLASSES:
            if not isinstance(self.owner, UserKey):
                hint = (
                    f"DataKey({dc!r}, UserKey.parse({self.owner!r}))"
                    if isinstance(self.owner, str) and _USER_RE.match(self.owner)
                    else f"DataKey({dc!r}, UserKey('eu', 42))"
                )
                raise InputError(
                    f"owner {self.owner!r} of personal data class {dc!r} must be a "
                    f"UserKey; use {hint}"
                )
        elif isinstance(self.owner, UserKey):
            raise InputError(
                f"data class {dc!r} is not personal, but its owner {self.owner} is a "
                "user; use a personal class (user_features, ...) or an item id"
            )
        else:
            validate_item_id(self.owner)

    @property
    def jurisdiction(self) -> str | None:
        """The owner's jurisdiction for personal data, else None."""
        return self.owner.jurisdiction if isinstance(self.owner, UserKey) else None

    def __str__(self) -> str:
        return f"{self.data_class}:{self.owner}"
