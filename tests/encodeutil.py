"""What the tests of the one-step encoders (`encode_image`, `encode_container`: `_ext/records.pxi`
and their twins in `cargohold._fallback_records`) share: the encoders of each core, a fixed clock,
two databases on it, the rows a creation may write, and the check of an encoder's output against
what the validating path writes."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any, Callable

from hypothesis import HealthCheck, settings

import cargohold
from cargohold import _fallback, schema
from cargohold.timeutil import from_ns, to_ns

try:
    from cargohold import _core
except ImportError:  # the extension did not build: the twin alone
    _core = None

WHEN = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
NOW = to_ns(WHEN)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
namespaces = itertools.count()


def encoders(name: str) -> dict[str, Callable]:
    """The pure-Python encoder `name` and, when the extension built, the compiled one."""
    found = {"fallback": getattr(_fallback, name)}
    if _core is not None:
        found["compiled"] = getattr(_core, name)
    return found


def outcome(fn: Callable[[], Any]) -> tuple:
    try:
        return ("ok", fn())
    except Exception as exc:  # the class and message are what must agree
        return (type(exc).__name__, str(exc))


def open_pair(tmp_path_factory):
    """Two databases on one fixed clock: creations outside any transaction and inside one."""
    roots = [tmp_path_factory.mktemp("outside"), tmp_path_factory.mktemp("inside")]
    with cargohold.open(roots[0], durable=False, clock=lambda: WHEN) as outside, \
            cargohold.open(roots[1], durable=False, clock=lambda: WHEN) as inside:
        yield outside, inside


def rows(tx, ns: str) -> tuple:
    """The rows a creation in namespace ns may write: its records, its node-table entries (of any
    node of ns), the namespace's record."""
    prefix = ns.encode() + b"\x00"
    nodes = [(k, v) for k, v in tx.kv.scan(schema.T_GC) if k[1:].startswith(prefix)]
    return (list(tx.kv.scan(schema.T_OBJECTS, prefix)), nodes, tx.kv.get(schema.T_NAMESPACES, ns.encode()))


def create_outside(db, ns: str, create: Callable, shape: Callable) -> tuple:
    """`create(namespace handle)` outside any transaction: its outcome and the rows after it."""
    result = outcome(lambda: shape(create(db.namespace(ns))))
    with db.view() as tx:
        return result, rows(tx, ns)


def create_inside(db, ns: str, create: Callable, shape: Callable) -> tuple:
    """`create(namespace handle)` inside a write transaction that goes on: its outcome and the rows."""
    with db.update() as tx:
        before = rows(tx, ns)
        result = outcome(lambda: shape(create(db.namespace(ns))))
        if result[0] != "ok":
            assert rows(tx, ns) == before  # a failed call changes nothing, and the transaction goes on
    with db.view() as tx:
        return result, rows(tx, ns)


def check_against_validation(db, ns: str, obj: Any, create: Callable, shape: Callable, found: dict,
                             keys: Callable[[], tuple]) -> None:
    """Each encoder of `found` refuses what `create` (validating, outside any transaction) refuses,
    and for what it takes gives the stored object, and its record and node entry under the keys
    ``keys()`` gives (asked only then), exactly as written there."""
    expected = outcome(lambda: create(db.namespace(ns)))
    with db.view() as tx:
        written = rows(tx, ns)
    for name, encode in found.items():
        got = encode(obj, ns, NOW, from_ns(NOW))
        if expected[0] != "ok":
            assert got is None, (name, expected)
            continue
        if got is None:  # not of the plain form: the store validated it instead
            continue
        stored, got_key, record, got_node, entry = got
        assert shape(stored) == shape(expected[1])
        key, node = keys()
        assert (got_key, got_node) == (key, node)
        assert [(key, record)] == written[0], name
        assert (node, entry) in written[1], name
