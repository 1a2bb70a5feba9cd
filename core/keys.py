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

from geoshard.errors import InputError

__all__ = ["MAX_ID", "DataKey", "UserKey", "validate_item_id"]

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
            raise InputError(f"user id {self.user_id} is out of range; use an integer in [0, {MAX_ID}]")
        if not isinstance(self.jurisdiction, str) or not re.match(r"^[a-z][a-z0-9-]{0,39}$", self.jurisdiction):
            raise InputError(f"jurisdiction {self.jurisdiction!r} in a user key is malformed; "
                             "use lower-case letters, digits and '-' such as 'eu'")

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
            raise InputError(f"user key '{shown}' is malformed; expected "
                             "'<jurisdiction>:<non-negative integer>' such as 'eu:42'")
        uid = int(m.group(2))
        return cls(m.group(1), uid)

    def __str__(self) -> str:
        return f"{self.jurisdiction}:{self.user_id}"


def validate_item_id(item_id: object) -> str:
    """Return ``item_id`` when it is a valid item id, else raise :class:`InputError`.

    Item ids are 1 to 128 characters of ``A-Z a-z 0-9 _ . -``.
    """
    if not isinstance(item_id, str) or not _ITEM_RE.match(item_id):
        shown = repr(item_id) if not isinstance(item_id, str) or len(item_id) <= 60 else repr(item_id[:57] + "...")
        raise InputError(f"item id {shown} is malformed; use 1 to 128 characters of "
                         "letters, digits, '_', '.' or '-'")
    return item_id


@dataclass(frozen=True)
class DataKey:
    """One datum of the data layer: its class and whose it is.

    For a personal class ``owner`` is a :class:`UserKey`; for a non-personal class it is an
    item id or an aggregate name (``jurisdiction`` is then None and any region may hold it).
    """

    data_class: str
    owner: UserKey | str

    @property
    def jurisdiction(self) -> str | None:
        """The owner's jurisdiction for personal data, else None."""
        return self.owner.jurisdiction if isinstance(self.owner, UserKey) else None

    def __str__(self) -> str:
        return f"{self.data_class}:{self.owner}"
