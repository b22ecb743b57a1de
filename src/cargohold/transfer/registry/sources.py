"""Distribution-source labels: which repositories of a registry a blob was pulled from.

containerd labels every pulled blob ``containerd.io/distribution.source.<host>``
(the registry host without its port) with the comma-separated, sorted,
de-duplicated repository paths it came from (`appendDistributionSourceLabel`).
A push reads them back to mount a blob from another repository of the same
registry instead of uploading it (`selectRepositoryMountCandidate`: the
repository sharing the most leading path components with the target, the
last of equals, never the target itself).
"""

from __future__ import annotations

from typing import Mapping, Optional

from ...errors import InvalidArgument
from ...validation import validate_label
from ...oci.reference import Reference

LABEL_DISTRIBUTION_SOURCE = "containerd.io/distribution.source"


def source_label_key(reference: Reference) -> str:
    return f"{LABEL_DISTRIBUTION_SOURCE}.{reference.hostname}"


def append_source(current: str, repository: str) -> str:
    """`current` (a label value) with `repository` added: sorted, each once, no empty entries."""
    repositories = {repo for repo in current.split(",") if repo}
    if repository:
        repositories.add(repository)
    return ",".join(sorted(repositories))


def source_label(reference: Reference, labels: Optional[Mapping[str, str]]) -> dict:
    """The label to set on a blob pulled from `reference`, given the blob's current labels.

    Empty when the value would exceed the label size limit (containerd skips it then too).
    """
    key = source_label_key(reference)
    value = append_source((labels or {}).get(key, ""), reference.path)
    try:
        validate_label(key, value)
    except InvalidArgument:
        return {}
    return {key: value}


def _common_components(a: list, b: list) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def mount_candidate(reference: Reference, labels: Optional[Mapping[str, str]]) -> str:
    """The repository of the target's registry to mount a blob with these labels from, or ""."""
    value = (labels or {}).get(source_label_key(reference), "")
    target = reference.path.split("/")
    best, match = 0, ""
    for repo in value.split(","):
        if not repo or repo == reference.path:
            continue
        common = _common_components(target, repo.split("/"))
        if common >= best:
            best, match = common, repo
    return match
