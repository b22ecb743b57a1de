"""The skeleton the image, container and sandbox stores share, and checks of
the values they keep.

Each of those stores keeps one msgpack map per object in table ``objects``
(its layout is in `cargohold.schema`) and one node-table entry beside it. A
`RecordStore` subclass says how to validate, encode, decode, filter and index
its objects; this class does get / list / create / update / delete with the
guarantees every store owes: validate before writing, check every failure
case before the first write (a caller's transaction stays clean when a call
fails), timestamps from the transaction, node table in the same transaction.

A creation inside a write transaction first asks the subclass to `_prepare` the
object in one step (the image and container stores: one compiled call each,
`cargohold._native.encode_image` and `encode_container`);
an object that step does not take, or a creation outside any transaction, goes
through validate / encode / index, whose checks name the fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Iterable, Mapping, Optional, TypeVar

from . import filters, schema
from .errors import AlreadyExists, Corrupted, InvalidArgument, NotFound
from .model import RuntimeInfo, evolve
from .timeutil import from_ns, to_ns
from .transaction import Transaction
from .validation import require_str

if TYPE_CHECKING:
    from .transaction import NamespaceHandle

T = TypeVar("T")

_index_module: Any = None


def _gc_index() -> Any:
    """`cargohold.gc.index`, imported by the first write (a reading command never loads it)."""
    global _index_module
    if _index_module is None:
        from .gc import index

        _index_module = index
    return _index_module


class RecordStore(Generic[T]):
    """get / list / create / update / delete of one kind of object in one namespace."""

    kind: bytes
    """The object kind (`schema.K_*`)."""
    node_type: int
    """The node-table type of the objects (`ResourceType` or `index.SANDBOX`)."""
    what: str
    """What an object is called in messages ("image")."""
    model: type
    """The data class of the objects."""
    id_field: str = "id"
    """The attribute that names an object."""

    def __init__(self, ns: "NamespaceHandle") -> None:
        self._ns = ns
        self._db = ns.db

    # -- what a subclass provides ----------------------------------------------------------

    def _check_id(self, ident: object) -> str:
        """Validate an object's id (raise InvalidArgument)."""
        raise NotImplementedError

    def _validate(self, obj: T) -> T:
        """A validated, normalised copy of obj (empty labels dropped); InvalidArgument otherwise."""
        raise NotImplementedError

    def _encode(self, obj: T) -> dict:
        """The record of obj, without its id and timestamps."""
        raise NotImplementedError

    def _decode(self, ident: str, record: dict) -> T:
        """The object of a record, without its timestamps."""
        raise NotImplementedError

    def _adaptor(self, obj: T) -> filters.Adaptor:
        """The filter fields of obj."""
        raise NotImplementedError

    def _index(self, t: "Transaction", obj: T) -> None:
        """Write obj's node-table entry."""
        raise NotImplementedError

    def _merge(self, current: T, new: T, paths: tuple) -> T:
        """current with `paths` copied from new (all updatable fields when paths is empty)."""
        raise NotImplementedError

    def _before_write(self, t: "Transaction", obj: T, created: bool) -> None:
        """Last checks (and side writes that check first, like joining a lease) before obj is written."""

    def _prepare(self, t: "Transaction", obj: object) -> Optional[tuple]:
        """What `create` writes for obj in write transaction t, made in one step when obj is of the
        form nearly every object has: (stored object, record key, record, node key, node-table
        entry), as validating, encoding and indexing obj would give them; else None (the general
        path then validates obj, and names its fault)."""
        return None

    # -- the store ------------------------------------------------------------------------------

    def _id(self, obj: T) -> str:
        return getattr(obj, self.id_field)

    def _key(self, ident: str) -> bytes:
        return schema.object_key(self._ns.name, self.kind, ident)

    def _load(self, t: "Transaction", ident: str) -> Optional[T]:
        raw = t.kv.get(schema.T_OBJECTS, self._key(ident))
        return None if raw is None else self._from_raw(ident, raw)

    def _from_raw(self, ident: str, raw: bytes) -> T:
        record = schema.unpack(raw, f"{self.what} {ident!r}")
        try:
            obj = self._decode(ident, record)
            return evolve(obj, created_at=from_ns(record["c"]), updated_at=from_ns(record["u"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Corrupted(f"damaged {self.what} {ident!r} in namespace {self._ns.name!r}: {exc!r}") from None

    def _require(self, t: "Transaction", ident: str) -> T:
        obj = self._load(t, ident)
        if obj is None:
            raise NotFound(f"{self.what} {ident!r} not found in namespace {self._ns.name!r}")
        return obj

    def _check_obj(self, obj: object) -> None:
        if not isinstance(obj, self.model):
            raise InvalidArgument(f"expected a cargohold.{self.model.__name__}, not {type(obj).__name__}")

    def _write(self, t: "Transaction", obj: T, created_ns: int, key: Optional[bytes] = None) -> T:
        record = self._encode(obj)
        record["c"], record["u"] = created_ns, t.now
        t.kv.put(schema.T_OBJECTS, key or self._key(self._id(obj)), schema.pack(record))
        updated = t.now_at
        stored = evolve(obj, created_at=updated if created_ns == t.now else from_ns(created_ns), updated_at=updated)
        self._index(t, stored)
        return stored

    def _insert(self, t: "Transaction", stored: T, key: bytes, record: bytes, node: bytes, entry: bytes) -> T:
        """The body of `create` for a `_prepare`d object: the same checks, in the same order."""
        ns = self._ns.name
        if t.kv.get(schema.T_OBJECTS, key) is not None:
            raise AlreadyExists(f"{self.what} {self._id(stored)!r} already exists in namespace {ns!r}")
        self._before_write(t, stored, True)
        t.ensure_namespace(ns)
        t.kv.put(schema.T_OBJECTS, key, record)
        _gc_index().put_entry(t, node, entry)
        return stored

    def get(self, ident: str, *, tx: Optional["Transaction"] = None) -> T:
        """The object; NotFound if there is none."""
        self._check_id(ident)
        with self._db.transaction(tx, write=False) as t:
            return self._require(t, ident)

    def list(self, *filter_args: str, tx: Optional["Transaction"] = None) -> list:
        """Every object matching any of the filters (all without filters), in key order."""
        flt = filters.parse(*filter_args)
        prefix = schema.object_prefix(self._ns.name, self.kind)
        with self._db.transaction(tx, write=False) as t:
            found = (self._from_raw(schema.text(key[len(prefix):]), raw)
                     for key, raw in t.kv.scan(schema.T_OBJECTS, prefix))
            return [obj for obj in found if flt.match(self._adaptor(obj))]

    def create(self, obj: T, *, tx: Optional["Transaction"] = None) -> T:
        """Store a new object, stamped with the transaction's time; AlreadyExists if it exists."""
        t = self._db._current() if tx is None else tx
        if type(t) is Transaction and t.write and t.db is self._db:
            prepared = self._prepare(t, obj)
            if prepared is not None:
                return self._insert(t, *prepared)
        self._check_obj(obj)
        obj = self._validate(obj)
        ident = self._id(obj)

        key = self._key(ident)

        def create(t: "Transaction") -> T:
            if t.kv.get(schema.T_OBJECTS, key) is not None:
                raise AlreadyExists(f"{self.what} {ident!r} already exists in namespace {self._ns.name!r}")
            self._before_write(t, obj, True)
            t.ensure_namespace(self._ns.name)
            return self._write(t, obj, t.now, key)

        return self._db.write(tx, create)

    def update(self, obj: T, *fieldpaths: str, tx: Optional["Transaction"] = None) -> T:
        """Copy the field paths (every updatable field without any) from obj onto the stored object.

        NotFound if it does not exist; InvalidArgument for a path the object
        does not have or a result that fails validation.
        """
        self._check_obj(obj)
        ident = self._check_id(self._id(obj))
        for path in fieldpaths:
            require_str(path, "field path")

        def update(t: "Transaction") -> T:
            current = self._require(t, ident)
            updated = self._validate(self._merge(current, obj, fieldpaths))
            self._before_write(t, updated, False)
            return self._write(t, updated, to_ns(current.created_at))

        return self._db.write(tx, update)

    def _delete(self, t: "Transaction", ident: str) -> None:
        """Delete a record that exists, with its node-table entry, and mark the database dirty."""
        from .gc import index  # with the first write: a reading command never loads the collector's modules

        t.kv.delete(schema.T_OBJECTS, self._key(ident))
        index.remove(t, self.node_type, self._ns.name, ident)
        t.mark_dirty()

    def delete(self, ident: str, *, tx: Optional["Transaction"] = None) -> None:
        """Delete the object; NotFound if there is none."""
        self._check_id(ident)

        def delete(t: "Transaction") -> None:
            self._require(t, ident)
            self._delete(t, ident)

        self._db.write(tx, delete)


def apply_fieldpaths(current: Any, new: Any, paths: Iterable[str], *, fields: Mapping[str, str],
                     maps: Mapping[str, str], what: str) -> Any:
    """current with `paths` copied from new (containerd's field mask).

    `fields` and `maps` map a path to an attribute: the path replaces the
    attribute; ``<map path>.<key>`` copies one key of a map attribute (absent
    or None in new deletes it; validation then drops empty labels). Any other
    path is InvalidArgument.
    """
    changes: dict = {}
    for path in paths:
        head, dot, key = path.partition(".")
        if dot and head in maps:
            attr = maps[head]
            merged = dict(changes.get(attr, getattr(current, attr)) or {})
            value = (getattr(new, attr) or {}).get(key)
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
            changes[attr] = merged
        elif path in fields or path in maps:
            attr = fields.get(path) or maps[path]
            changes[attr] = getattr(new, attr)
        else:
            raise InvalidArgument(f"cannot update field {path!r} of {what}")
    import dataclasses

    return dataclasses.replace(current, **changes)


def require_unchanged(field: str, old: object, new: object, what: str) -> None:
    """An immutable field must keep its value in an update without field paths."""
    if new != old:
        raise InvalidArgument(f"{field} of {what} is immutable: cannot change {old!r} to {new!r}")


# -- checks of the values the stores keep ----------------------------------------------------


def check_opaque(value: Any, what: str) -> Any:
    """A value the store keeps without interpreting it (runtime options, extensions).

    It must be encodable as msgpack (None, bool, int, float, str, bytes, lists
    and dicts of those); tuples come back as lists.
    """
    try:
        schema.pack(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidArgument(f"{what} {value!r:.80} cannot be stored: {exc}") from None
    return value


def check_spec(spec: Any, what: str) -> bytes:
    if not isinstance(spec, (bytes, bytearray, memoryview)):
        raise InvalidArgument(f"{what} must be bytes, not {type(spec).__name__}")
    return bytes(spec)


def check_runtime(runtime: Any, what: str, *, required: bool) -> RuntimeInfo:
    if not isinstance(runtime, RuntimeInfo):
        raise InvalidArgument(f"{what} must be a cargohold.RuntimeInfo, not {type(runtime).__name__}")
    require_str(runtime.name, f"{what} name")
    if required and not runtime.name:
        raise InvalidArgument(f"{what} name must be set")
    check_opaque(runtime.options, f"{what} options")
    return runtime


def check_extensions(extensions: Mapping[str, Any], what: str) -> dict:
    """Named opaque values: keys non-empty strings; None values are dropped."""
    out = {}
    for name, value in extensions.items():
        require_str(name, f"{what} name")
        if not name:
            raise InvalidArgument(f"{what} names must not be empty")
        if value is not None:
            out[name] = check_opaque(value, f"{what} {name!r}")
    return out


def check_string_map(mapping: Mapping[str, str], what: str) -> dict:
    """A map of text without size limits (annotations); empty values are dropped."""
    if type(mapping) is dict and not mapping:
        return {}
    out = {}
    for key, value in mapping.items():
        if not (isinstance(key, str) and key.isascii()):
            require_str(key, f"{what} key")
        if not (isinstance(value, str) and value.isascii()):
            require_str(value, f"{what} {key!r:.80}")
        if not key:
            raise InvalidArgument(f"{what} keys must not be empty")
        if value:
            out[key] = value
    return out
