"""What a consistency check reports: one `Finding` per problem, the `Repair`s made, the `Report`.

The same types serve a cargohold root (`cargohold.fsck`) and a containerd root
(`cargohold.containerd.fsck`): the invariants both share (a record's data must
exist, data no record owns is debris) carry the same kind names, so one
script reads both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# -- kinds ---------------------------------------------------------------------------------
# data a record names is missing or damaged
MISSING_BLOB = "missing-blob"
WRONG_SIZE = "wrong-size"
BAD_DIGEST = "bad-digest"
MISSING_INGEST = "missing-ingest"
NO_BACKEND = "no-backend"
MISSING_BACKEND_SNAPSHOT = "missing-backend-snapshot"
MISSING_SNAPSHOT_DIR = "missing-snapshot-dir"
BACKEND_KIND = "backend-kind-mismatch"
BACKEND_PARENT = "backend-parent-mismatch"
# data no record owns (what a crash or an interrupted import left)
UNOWNED_BLOB = "unowned-blob"
STRAY_FILE = "stray-file"
UNOWNED_INGEST = "unowned-ingest"
UNOWNED_BACKEND_SNAPSHOT = "unowned-backend-snapshot"
UNOWNED_SNAPSHOT_DIR = "unowned-snapshot-dir"
# the metadata itself
DAMAGED_RECORD = "damaged-record"
UNKNOWN_RECORD = "unknown-record"
MISSING_NODE = "missing-node"
WRONG_NODE = "wrong-node"
ORPHAN_NODE = "orphan-node"
ORPHAN_LEASE_RESOURCE = "orphan-lease-resource"
MISSING_PARENT = "missing-parent"
PARENT_NOT_COMMITTED = "parent-not-committed"
WRONG_PARENT_ID = "wrong-parent-id"
MISSING_CHILD_LINK = "missing-child-link"
ORPHAN_CHILD_LINK = "orphan-child-link"
MISSING_NAMESPACE = "missing-namespace"
SEQUENCE_BEHIND = "sequence-behind"
FOREIGN_BACKEND = "foreign-backend"
# notes: state worth knowing, not a problem
DIRTY_BACKEND = "dirty-backend"
QUARANTINED = "quarantined"

NOTES = frozenset({DIRTY_BACKEND, QUARANTINED})
"""Kinds that describe normal state (deletions awaiting a collection, files moved aside)."""

# -- repairs (what `--repair` does about a finding) -------------------------------------------
REBUILD = "rebuild"
"""Rewrite derived metadata (a node-table entry, a child link, a counter, a namespace record) from the records."""
DROP = "drop"
"""Delete a record whose data is gone, or an entry without a record: only when no root reaches it."""
QUARANTINE = "quarantine"
"""Move a blob whose bytes do not match its digest aside (``content/quarantine``), then as for drop."""
PRUNE = "prune"
"""Delete data no record owns (only with ``--prune-orphans``)."""


@dataclass(frozen=True)
class Finding:
    """One problem: its kind, where (namespace, store, key), the bytes involved and what repair applies."""

    kind: str
    namespace: str
    """The record's namespace; ``-`` for data no record owns and for the database as a whole."""
    store: str
    """``content``, ``ingests``, ``snapshots/<snapshotter>``, ``images``, ``containers``, ``sandboxes``,
    ``leases`` or ``meta``."""
    key: str
    """A digest, an ingest ref, a snapshot key, an image name, an id (a backend key or a directory
    name for data no record owns)."""
    path: str = ""
    size: int = 0
    """Bytes on disk involved (0 for missing data)."""
    detail: str = ""
    repair: str = ""
    """The repair `--repair` applies (`REBUILD`, `DROP`, `QUARANTINE`, `PRUNE`), "" when none can be
    made without guessing (the finding is reported as lost and left alone)."""
    note: bool = False
    """Normal state rather than a problem: a note kind, or data no record owns in a backend whose
    cleanup is pending (the next collection deletes it)."""

    @property
    def name(self) -> str:
        """The key (the name earlier versions of the containerd checker gave it)."""
        return self.key

    @property
    def problem(self) -> bool:
        return not self.note and self.kind not in NOTES


@dataclass(frozen=True)
class Repair:
    """One repair `--repair` made (or tried): each in its own transaction."""

    finding: Finding
    action: str
    done: bool
    message: str


@dataclass
class Report:
    """Everything one check found, and what its repairs did."""

    root: str
    schema: str = ""
    version: int = 0
    identity: str = ""
    findings: list = field(default_factory=list)
    repairs: list = field(default_factory=list)
    checked: dict = field(default_factory=dict)
    """How many objects of each kind were checked (``records``, ``nodes``, ``blobs``, ...)."""

    @property
    def problems(self) -> list:
        """The findings that are problems (not notes)."""
        return [f for f in self.findings if f.problem]

    def repairable(self, prune_orphans: bool = False) -> list:
        """The findings `--repair` (with `prune_orphans`) would act on: the problems it can fix and,
        with `prune_orphans`, all data no record owns (also what the next collection would delete)."""
        return [f for f in self.findings if f.repair and (f.problem or f.repair == PRUNE)
                and (f.repair != PRUNE or prune_orphans)]

    @property
    def clean(self) -> bool:
        return not self.problems

    def bytes_involved(self) -> int:
        return sum(f.size for f in self.problems)


def summary(findings: list, repairs: Optional[list] = None) -> str:
    """One line for people: how many problems, how many bytes, what was repaired."""
    problems = [f for f in findings if f.problem]
    if not problems:
        line = "no findings" if not findings else f"no problems ({len(findings)} note(s))"
    else:
        line = f"{len(problems)} finding(s), {sum(f.size for f in problems)} bytes involved"
    if repairs:
        done = sum(1 for r in repairs if r.done)
        line += f"; {done} repair(s) made" + (f", {len(repairs) - done} failed" if done < len(repairs) else "")
    return line
