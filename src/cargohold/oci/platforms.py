"""Platforms (os/architecture/variant) and containerd's rules for matching them.

Behaviour of the `containerd/platforms` module: normalisation (``x86_64`` is
``amd64``, ``aarch64`` is ``arm64``, ``arm`` without variant is ``arm/v7``...),
specifier parsing (``linux``, ``arm64``, ``linux/arm/v6``), and the matchers:
`only` (a platform and what it can also run: amd64/v3 runs v2, v1 and 386;
arm64 runs arm/v8..v5; arm/v7 runs v6 and v5), `only_strict`, `ordered` and
`ALL`. `default()` is ``only(host())``, the host with the CPU variant read
from /proc/cpuinfo, as containerd's `platforms.Default()`.

Windows OS-version matching is not implemented: os_version is carried but not
compared.
"""

from __future__ import annotations

import functools
import platform as _pyplatform
import re
from dataclasses import dataclass, replace
from typing import Iterable, Optional, Sequence, Union

from ..errors import InvalidArgument


@dataclass(frozen=True)
class Platform:
    """An OCI platform: what an image or index entry runs on."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple = ()

    def __str__(self) -> str:
        return format_platform(self)


_KNOWN_OS = frozenset("aix android darwin dragonfly freebsd hurd illumos ios js linux nacl "
                      "netbsd openbsd plan9 solaris windows zos".split())
_KNOWN_ARCH = frozenset("386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips "
                        "mipsle mips64 mips64le mips64p32 mips64p32le ppc riscv riscv64 s390 "
                        "s390x sparc sparc64 wasm".split())
_SPECIFIER_PART = re.compile(r"[A-Za-z0-9_.-]+\Z")
_OS_PART = re.compile(r"([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?\Z")


def _normalize_os(os_name: str) -> str:
    if not os_name:
        return host().os
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def _normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    """The canonical form of `p` (containerd's `platforms.Normalize`)."""
    arch, variant = _normalize_arch(p.architecture, p.variant)
    return Platform(_normalize_os(p.os), arch, variant, p.os_version,
                    tuple(sorted(set(p.os_features))))


def format_platform(p: Platform) -> str:
    """``os/arch[/variant]``, or ``unknown`` when the os is empty."""
    if not p.os:
        return "unknown"
    return "/".join(part for part in (p.os, p.architecture, p.variant) if part)


def parse(specifier: str) -> Platform:
    """Parse a platform specifier: ``<os>|<arch>|<os>/<arch>[/<variant>]`` (containerd's `Parse`).

    A lone os gets the host architecture, a lone architecture the host os.
    """
    if not isinstance(specifier, str) or "*" in specifier or not specifier:
        raise InvalidArgument(f"invalid platform specifier {specifier!r}")
    parts = specifier.split("/")
    if len(parts) > 3:
        raise InvalidArgument(f"invalid platform specifier {specifier!r}: too many components")
    m = _OS_PART.match(parts[0])
    if m is None or not all(_SPECIFIER_PART.match(part) for part in parts[1:]):
        raise InvalidArgument(f"invalid platform specifier {specifier!r}")
    os_name = _normalize_os(m.group(1))
    os_version = m.group(2) or ""
    features = tuple(f for f in (m.group(3) or "").split("+") if f)
    if len(parts) == 1:
        if os_name in _KNOWN_OS:
            here = host()
            variant = here.variant if here.architecture == "arm" and here.variant != "v7" else ""
            return Platform(os_name, here.architecture, variant, os_version, features)
        arch, variant = _normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform(host().os, arch, variant)
        raise InvalidArgument(f"invalid platform specifier {specifier!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = _normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(os_name, arch, variant, os_version, features)
    arch, variant = _normalize_arch(parts[1], parts[2])
    if arch == "arm64" and not variant:
        variant = "v8"
    return Platform(os_name, arch, variant, os_version, features)


class Matcher:
    """Matches platforms and orders them by preference (containerd's `MatchComparer`)."""

    def match(self, p: Platform) -> bool:
        raise NotImplementedError

    def less(self, a: Platform, b: Platform) -> bool:
        """Whether `a` is preferred to `b`."""
        raise NotImplementedError


class _Exact(Matcher):
    def __init__(self, p: Platform) -> None:
        self.platform = normalize(p)

    def match(self, p: Platform) -> bool:
        mine, other = self.platform, normalize(p)
        if (mine.os, mine.architecture, mine.variant) != (other.os, other.architecture, other.variant):
            return False
        return set(other.os_features) <= set(mine.os_features)

    def less(self, a: Platform, b: Platform) -> bool:
        return False


class _Ordered(Matcher):
    def __init__(self, platforms: Iterable[Platform]) -> None:
        self._matchers = [_Exact(p) for p in platforms]

    def match(self, p: Platform) -> bool:
        return any(m.match(p) for m in self._matchers)

    def less(self, a: Platform, b: Platform) -> bool:
        for m in self._matchers:
            ma, mb = m.match(a), m.match(b)
            if ma or mb:
                return ma and not mb
        return False

    def __repr__(self) -> str:
        return "ordered(" + ", ".join(str(m.platform) for m in self._matchers) + ")"


class _All(Matcher):
    def match(self, p: Platform) -> bool:
        return True

    def less(self, a: Platform, b: Platform) -> bool:
        return False

    def __repr__(self) -> str:
        return "ALL"


ALL: Matcher = _All()
"""Matches every platform, with no preference."""


def ordered(*platforms: Platform) -> Matcher:
    """Match any of `platforms`, preferring them in the order given."""
    return _Ordered(platforms)


def only_strict(p: Platform) -> Matcher:
    """Match `p` alone (containerd's `OnlyStrict`, what ``ctr import --platform`` uses)."""
    return _Ordered([normalize(p)])


def _variant_number(variant: str) -> Optional[int]:
    digits = variant[1:] if variant.startswith("v") else variant
    return int(digits) if digits.isdigit() else None


def compatible(p: Platform) -> list[Platform]:
    """`p` followed by the platforms it can also run, best first (containerd's `platformVector`)."""
    vector = [p]
    same = functools.partial(replace, p)
    if p.architecture == "amd64":
        level = _variant_number(p.variant)
        if level is not None and level > 1:
            vector += [same(variant=f"v{n}") for n in range(level - 1, 0, -1)]
        vector.append(same(architecture="386", variant=""))
    elif p.architecture == "arm":
        level = _variant_number(p.variant)
        if level is not None and level > 5:
            vector += [same(variant=f"v{n}") for n in range(level - 1, 4, -1)]
    elif p.architecture == "arm64":
        vector += _arm64_older(p)
    return vector


def _arm64_older(p: Platform) -> list[Platform]:
    variant = p.variant or "v8"
    major_text, dot, minor_text = variant.partition(".")
    major = _variant_number(major_text)
    out: list[Platform] = []
    if major is not None and major >= 8:
        minor = int(minor_text) if dot and len(variant) == 4 and minor_text.isdigit() else 0

        def name(maj: int, mnr: int) -> str:
            return f"v{maj}" if mnr == 0 else f"v{maj}.{mnr}"

        if major == 9:
            out += [replace(p, variant=name(9, m)) for m in range(minor - 1, -1, -1)]
            # v9.x descends from v8.(x+5)
            minor, major = minor + 5, 8
            out.append(replace(p, variant=f"v8.{minor}"))
        out += [replace(p, variant=name(major, m)) for m in range(minor - 1, -1, -1)]
    if variant.startswith(("v8.", "v9.")):
        variant = "v8"
    return out + compatible(replace(p, architecture="arm", variant=variant))


def only(p: Platform) -> Matcher:
    """Match `p` and what it can also run, preferring `p` (containerd's `Only`)."""
    return _Ordered(compatible(normalize(p)))


@functools.lru_cache(maxsize=1)
def host() -> Platform:
    """The platform of this machine, with its CPU variant (containerd's `DefaultSpec`)."""
    os_name = _pyplatform.system().lower() or "linux"
    machine = _pyplatform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "i386": "386", "i686": "386", "loongarch64": "loong64"}.get(machine, machine)
    if arch.startswith("arm") and arch != "arm64":
        arch = "arm"
    variant = ""
    if arch == "amd64":
        variant = _amd64_level(_cpuinfo("flags").split())
    elif arch in ("arm", "arm64"):
        variant = _arm_variant(_cpuinfo("CPU architecture"), machine)
    return Platform(os_name, arch, variant)


def default() -> Matcher:
    """The matcher an import uses when no platform is given: ``only(host())``."""
    return only(host())


PlatformSpec = Union[str, Platform, None]
"""A platform as the API takes one: a specifier (``"linux/arm64"``), a Platform, or None for the host's."""


def platform_matcher(platform: PlatformSpec = None, all_platforms: bool = False) -> Matcher:
    """Every platform with `all_platforms`; else only `platform` when given, else the host's (containerd's default)."""
    if all_platforms:
        return ALL
    if platform is None:
        return default()
    return only_strict(parse(platform) if isinstance(platform, str) else platform)


def _cpuinfo(field: str) -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip().lower() == field.lower():
                    return value.strip()
    except OSError:
        pass
    return ""


_AMD64_LEVELS: Sequence[Sequence[str]] = (
    ("cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"),
    ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"),
    ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),
)


def _amd64_level(flags: Sequence[str]) -> str:
    present = set(flags)
    level = 1
    for required in _AMD64_LEVELS:
        if not present.issuperset(required):
            break
        level += 1
    return f"v{level}"


def _arm_variant(cpu_architecture: str, machine: str) -> str:
    value = cpu_architecture.lower()
    if not value:
        value = "8" if machine == "aarch64" else machine[4:5] if machine.startswith("armv") else ""
    if value in ("8", "aarch64"):
        return "v8"
    if value in ("7", "7m") or value.startswith("?("):
        return "v7"
    if value in ("6", "6tej"):
        return "v6"
    if value in ("5", "5t", "5te", "5tej"):
        return "v5"
    return "unknown" if value else ""
