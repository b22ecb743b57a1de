"""Kill the real `cargohold` command (SIGKILL, through strace) at every fsync, fdatasync, rename,
unlink and rmdir it makes, one kill point per run on a fresh root, and check after each kill:

* every snapshot record has its backend snapshot (stat, usage, mounts) and every content
  record its blob of its size, through the API and the CLI, without a collection first;
* once the import's lease and image are removed, `gc` (the CLI, with the real clock) succeeds
  and leaves at most ingest debris too young to be called abandoned; a collection on a clock
  25 hours on (the lease would have expired, the debris is old) leaves the backends empty.

And the same for `gc` itself killed at every point of a collection that frees an image.
Slow (a run per kill point): `pytest -m slow tests/test_crash_injection.py`.
"""

from __future__ import annotations

import shutil

import pytest
from cliutil import image_archive, invoke, parsed
from crashutil import (EMPTY, backend_files, backend_snapshot_keys, check_records, collect_everything, describe,
                       dump, kill_points, later_clock, run_killed)

import cargohold

pytestmark = pytest.mark.slow


def _young_ingests_only(root) -> bool:
    with cargohold.open(root) as db:
        return all(leftover.type == "ingest-dir" for leftover in db.leftovers())


def _after_kill(root, point) -> list[str]:
    """The invariants a kill at `point` broke (empty: none)."""
    broken = []
    try:
        check_records(root)
    except Exception as exc:  # noqa: BLE001 - collect every failure, report them together
        broken.append(f"records without data after {describe(point)}: {exc}")
        return broken
    try:
        collect_everything(root)
        left = backend_files(root)
        if any(left[k] for k in ("blobs", "native", "overlayfs")) or not _young_ingests_only(root):
            broken.append(f"gc left more than young ingest debris after {describe(point)}: {dump(left)}")
        collect_everything(root, clock=later_clock())
        left, keys = backend_files(root), backend_snapshot_keys(root)
        if left != EMPTY or any(keys.values()):
            broken.append(f"backends not empty after {describe(point)}: {dump(left)} {dump(keys)}")
    except Exception as exc:  # noqa: BLE001
        broken.append(f"collection failed after {describe(point)}: {exc}")
    return broken


@pytest.mark.parametrize("snapshotter", ["native", "overlayfs"])
def test_import_killed_at_every_point(tmp_path, snapshotter):
    archive, _ = image_archive(tmp_path)
    args = ("images", "import", "--unpack", "--snapshotter", snapshotter, archive)
    root = tmp_path / "root"
    invoke(root, *args)
    broken = _after_kill(root, None)  # the checks themselves pass after a run that was not killed
    points = kill_points(tmp_path / "clean-run", *args)
    assert len(points) > 50
    for point in points:
        shutil.rmtree(root, ignore_errors=True)
        run_killed(root, point, *args)
        broken += _after_kill(root, point)
    assert broken == [], "\n".join(broken)


def test_gc_killed_at_every_point(tmp_path):
    """A collection killed anywhere, in its sweep or its cleanups: the next one frees everything."""
    archive, _ = image_archive(tmp_path)
    template = tmp_path / "template"
    invoke(template, "images", "import", "--unpack", archive)
    invoke(template, "images", "rm", *[i["name"] for i in parsed(invoke(template, "images", "ls", "--json"))])
    shutil.copytree(template, tmp_path / "clean-run")
    points = kill_points(tmp_path / "clean-run", "gc")
    assert len(points) > 10
    root = tmp_path / "root"
    broken = []
    for point in points:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template, root)
        run_killed(root, point, "gc")
        broken += _after_kill(root, point)
    assert broken == [], "\n".join(broken)
