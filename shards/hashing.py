"""Deterministic 64-bit key hashing for the ring.

Never Python's built-in ``hash()``: it is salted per process (``PYTHONHASHSEED``), so
two processes would disagree on where a key lives. The functions here give the same
value in every process, on every machine, in every Python version:

* ``int`` keys (user ids, ``0 <= key < 2**64``) go through the splitmix64 finaliser,
  which is a bijection on 64-bit integers and vectorises in NumPy ``uint64`` arithmetic.
* ``str`` keys go through ``xxhash.xxh3_64`` of their UTF-8 bytes.

An ``int`` key and its decimal string are different keys: ``hash_key(7) !=
hash_key("7")``. Anything else (``bool``, ``float``, ``bytes``, negative or too-large
ints, ``None``) raises :class:`~geoshard.errors.InputError` naming the value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import xxhash

from geoshard.errors import InputError

__all__ = ["MAX_INT_KEY", "Key", "hash_key", "hash_keys", "hash_str", "splitmix64"]

Key = int | str
"""A ring key: a non-negative ``int`` below ``2**64`` or a ``str``."""

MAX_INT_KEY = 2**64 - 1
"""The largest ``int`` key."""

_MASK = 2**64 - 1
_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_xxh3 = xxhash.xxh3_64_intdigest


def splitmix64(x: int) -> int:
    """Return the splitmix64 finaliser of ``x`` (a 64-bit unsigned integer).

    Args:
        x: an integer with ``0 <= x < 2**64``; not validated (see :func:`hash_key`).

    Returns:
        The mixed value, ``0 <= value < 2**64``.

    Examples:
        >>> splitmix64(0)
        16294208416658607535
    """
    z = (x + _GAMMA) & _MASK
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK
    return z ^ (z >> 31)


def hash_str(text: str) -> int:
    """Return ``xxh3_64`` of the UTF-8 bytes of ``text`` as an unsigned 64-bit int.

    Examples:
        >>> hash_str("user:42") == hash_str("user:42")
        True
    """
    return _xxh3(text.encode("utf-8"))


def _bad_key(key: object) -> InputError:
    if isinstance(key, int) and not isinstance(key, bool):
        return InputError(f"key {key!r} is out of range; int keys must satisfy 0 <= key < 2**64.")
    return InputError(
        f"key {key!r} has type {type(key).__name__}; keys must be int (0 <= key < 2**64) or str."
    )


def hash_key(key: object) -> int:
    """Return the 64-bit ring position of one key.

    Args:
        key: a non-negative ``int`` below ``2**64`` (NumPy integers are accepted) or a
            ``str``.

    Returns:
        An ``int`` with ``0 <= value < 2**64``, identical in every process.

    Raises:
        InputError: the key is of another type (``bool``, ``float``, ``bytes``, ...) or
            a negative or too-large int. The message names the value.

    Examples:
        >>> hash_key(0) == splitmix64(0)
        True
        >>> hash_key("user:0") == hash_str("user:0")
        True
    """
    kind = type(key)
    if kind is int:
        if 0 <= key <= _MASK:  # type: ignore[operator]
            return splitmix64(key)  # type: ignore[arg-type]
        raise _bad_key(key)
    if kind is str:
        return _xxh3(key.encode("utf-8"))  # type: ignore[attr-defined]
    if isinstance(key, bool):
        raise _bad_key(key)
    if isinstance(key, (int, np.integer)):
        return hash_key(int(key))
    if isinstance(key, str):
        return hash_key(str(key))
    raise _bad_key(key)


def _splitmix64_array(x: np.ndarray) -> np.ndarray:
    """Vectorised :func:`splitmix64` over a ``uint64`` array (returns a new array)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(_GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        return z ^ (z >> np.uint64(31))


def _hash_each(keys: Iterable[Any]) -> np.ndarray:
    return np.fromiter((hash_key(k) for k in keys), dtype=np.uint64)


def hash_keys(keys: Iterable[Any] | np.ndarray) -> np.ndarray:
    """Return the ring positions of many keys as a ``uint64`` array.

    Integer arrays (and lists made only of ``int``) are hashed fully vectorised; other
    inputs (strings, mixtures) are hashed one by one with :func:`hash_key`.

    Args:
        keys: a NumPy integer or string array, or any iterable of keys.

    Returns:
        A ``uint64`` array with one position per key, in input order.

    Raises:
        InputError: a key is of the wrong type or out of range; the message names the
            first bad value.

    Examples:
        >>> int(hash_keys([0, 1])[1]) == hash_key(1)
        True
    """
    if isinstance(keys, np.ndarray):
        return _hash_array(keys)
    items = keys if isinstance(keys, (list, tuple)) else list(keys)
    if all(type(k) is int for k in items):
        try:
            arr = np.array(items, dtype=np.uint64)
        except OverflowError:
            return _hash_each(items)  # raises, naming the first out-of-range value
        return _splitmix64_array(arr)
    return _hash_each(items)


def _hash_array(keys: np.ndarray) -> np.ndarray:
    flat = keys.reshape(-1)
    kind = flat.dtype.kind
    if kind == "u":
        return _splitmix64_array(flat.astype(np.uint64, copy=False))
    if kind == "i":
        negative = np.flatnonzero(flat < 0)
        if negative.size:
            raise _bad_key(int(flat[negative[0]]))
        return _splitmix64_array(flat.astype(np.uint64))
    if kind in ("U", "O"):
        return _hash_each(flat.tolist())
    if flat.size == 0:
        return np.empty(0, dtype=np.uint64)
    raise _bad_key(flat[0].item())
