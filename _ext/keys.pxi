# Keys of the metadata tables (`cargohold.schema`): object keys and packed node keys,
# built on every write. Parts are text; NUL separates them (validation keeps NUL out).


cdef bytes _key_part(object part):
    """`part` in UTF-8; InvalidArgument for text that has no UTF-8 form (a lone surrogate)."""
    try:
        if type(part) is str:
            return (<str>part).encode("utf-8")
        return part.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{part!r} is not valid Unicode text") from None


def object_key(ns, kind, *parts):
    """Key of one object record (or, with fewer parts, the prefix of a group)."""
    cdef list out = [_key_part(ns), kind]
    for part in parts:
        out.append(_key_part(part))
    return b"\x00".join(out)


def pack_node(rtype, ns, key):
    """The packed node key: one type byte, the namespace, NUL, the key."""
    return bytes((rtype,)) + _key_part(ns) + b"\x00" + _key_part(key)
