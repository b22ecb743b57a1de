"""The data classes of `cargohold.model` are built on first use (`cargohold.deferred`), and are then
exactly the classes `dataclasses.dataclass` makes: each check runs in a fresh process, where the
class it uses was not built yet."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import cargohold.model as model

CLASSES = ("Descriptor", "Image", "RuntimeInfo", "Container", "Sandbox", "Lease", "Resource", "Info", "Status",
           "SnapshotInfo", "Usage", "Mount", "Freed", "GCStats")


def run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_importing_the_model_builds_no_data_class():
    out = run(f"""
        import cargohold.model as m
        print(sorted(n for n in {CLASSES!r} if type(vars(getattr(m, n)).get("__dataclass_fields__")) is dict))
        """)
    assert out.strip() == "[]"


FIRST_USES = {
    "an instance": "m.Info('sha256:' + 'a' * 64, 3)",
    "is_dataclass": "dataclasses.is_dataclass(m.Info)",
    "fields": "dataclasses.fields(m.Info)",
    "signature": "inspect.signature(m.Info)",
    "unpickling": "pickle.loads(PICKLED)",
}


@pytest.mark.parametrize("use", FIRST_USES)
def test_each_first_use_gives_the_standard_dataclass(use):
    pickled = __import__("pickle").dumps(model.Info("sha256:" + "a" * 64, 3, {"k": "v"}))
    out = run(f"""
        from __future__ import annotations
        import copy, dataclasses, inspect, pickle
        import cargohold.model as m
        PICKLED = {pickled!r}
        {FIRST_USES[use]}

        @dataclasses.dataclass(frozen=True)
        class Plain(m._Frozen):
            digest: str
            size: int = 0
            labels: Optional[dict] = None
            created_at: Optional[datetime] = None
            updated_at: Optional[datetime] = None
            _mappings = ("labels",)

        info = pickle.loads(PICKLED)
        assert info == m.Info('sha256:' + 'a' * 64, 3, {{"k": "v"}}) and info.labels == {{"k": "v"}}
        assert hash(m.Usage(1, 2)) == hash(m.Usage(1, 2)) and m.Info("d", 1) != m.Info("d", 2)
        assert repr(m.Info("d", 1)) == repr(Plain("d", 1)).replace("Plain", "Info")
        assert str(inspect.signature(m.Info)) == str(inspect.signature(Plain))
        assert [f.name for f in dataclasses.fields(m.Info)] == [f.name for f in dataclasses.fields(Plain)]
        assert m.Info.__dataclass_params__.frozen and m.Info.__match_args__ == Plain.__match_args__
        try:
            info.size = 4
        except dataclasses.FrozenInstanceError:
            pass
        else:
            raise AssertionError("not frozen")
        assert dataclasses.replace(info, size=9).size == 9 and copy.deepcopy(info) == info
        assert dataclasses.asdict(info) == dataclasses.asdict(Plain('sha256:' + 'a' * 64, 3, {{"k": "v"}}))
        labels = {{"a": "b"}}
        assert m.Info("d", labels=labels).labels is not labels  # __post_init__ copies the mapping
        print("ok")
        """)
    assert out.strip() == "ok"


def test_every_class_builds_as_a_dataclass_in_a_fresh_process():
    out = run(f"""
        import copy, dataclasses, pickle
        import cargohold.model as m
        for name in {CLASSES!r}:
            cls = getattr(m, name)
            assert dataclasses.is_dataclass(cls), name
            assert "__init__" in vars(cls) and "__repr__" in vars(cls) and "__eq__" in vars(cls), name
            assert "_deferred_options" not in vars(cls) and "__setstate__" not in vars(cls), name
        stats = m.GCStats()
        stats.blobs.add(5)  # the mutable ones stay mutable, their default factories work
        assert stats.freed_bytes == 5 and m.Container("c").runtime == m.RuntimeInfo("")
        assert m.Mount("bind", "/x", ["ro"]).options == ("ro",)
        subclass = type("Sub", (m.Usage,), {{}})
        assert subclass(1, 2) == subclass(1, 2) and copy.copy(m.Freed(1, 2)) == m.Freed(1, 2)
        print("ok")
        """)
    assert out.strip() == "ok"
