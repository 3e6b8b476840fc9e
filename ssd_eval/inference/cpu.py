"""This CPU's int8 capability: which of onnxruntime's int8 kernel paths it gets, and whether that path can
saturate u8s8 dot products.

onnxruntime (MLAS) picks its int8 kernels by instruction set. On x86 without VNNI or AMX, u8s8 products are summed
in pairs in saturating int16 (``pmaddubsw``), so int8 weights outside [-64, 63] can clip; VNNI/AMX and ARM64
kernels accumulate in int32 and are exact. See /work/shared/REFERENCE.md "Quantized models and CPUs".
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
from dataclasses import asdict, dataclass, field

X86_ARCHES = ("x86_64", "i386", "i686", "x86")
# Per architecture, best first: (the flag that selects a kernel class, the class, whether its u8s8 sums saturate).
_KERNEL_CLASSES = {
    "x86": (("amx_int8", "x86-amx", False), ("avx512_vnni", "x86-vnni", False), ("avx_vnni", "x86-vnni", False),
            ("avx512bw", "x86-avx512", True), ("avx2", "x86-avx2", True), ("sse4_1", "x86-sse4.1", True),
            (None, "unknown", None)),  # flags unreadable (or a pre-SSE4.1 CPU): cannot say
    "aarch64": (("i8mm", "arm64-i8mm", False), ("asimddp", "arm64-dotprod", False),
                (None, "arm64", False)),  # NEON widening multiply-accumulate into int32: exact
}

_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}
# ARM "CPU implementer" 0x41 (Arm Ltd) part numbers of common server cores, for a readable name.
_ARM_PARTS = {"0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1", "0xd49": "Neoverse-N2", "0xd4f": "Neoverse-V2",
              "0xd8e": "Neoverse-N3", "0xd84": "Neoverse-V3", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76"}
# macOS sysctl names -> the Linux flag names used here.
_DARWIN_X86 = {"SSE4.1": "sse4_1", "AVX2": "avx2", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni",
               "AVXVNNI": "avx_vnni", "AMX_INT8": "amx_int8"}
_DARWIN_ARM = {"hw.optional.arm.FEAT_DotProd": "asimddp", "hw.optional.arm.FEAT_I8MM": "i8mm"}


@dataclass
class Int8Capability:
    """What this CPU means for onnxruntime's int8 kernels (``u8s8_can_saturate`` None: the CPU is unidentified)."""

    cpu: str
    arch: str
    flags: list[str] = field(default_factory=list)
    kernel_class: str = "unknown"
    u8s8_can_saturate: bool | None = None
    source: str = "/proc/cpuinfo"

    def to_dict(self) -> dict:
        """A JSON-ready mapping of every field."""
        return asdict(self)


def normalize_arch(machine: str) -> str:
    """``platform.machine()`` spelled one way per architecture: x86_64, aarch64, or as given (lower case)."""
    name = (machine or "").strip().lower()
    return _ARCH_ALIASES.get(name, name or "unknown")


def _parse_cpuinfo(text: str) -> tuple[str, set[str], str | None]:
    """(model name, flag/feature words, arch guessed from the text or None) from /proc/cpuinfo text."""
    name = ""
    words: set[str] = set()
    guessed = None
    implementer = part = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and not name:
            name = value
        elif key in ("flags", "features") and not words:
            words = set(value.split())
            guessed = "x86_64" if key == "flags" else "aarch64"
        elif key in ("hardware", "processor") and not name and not value.isdigit():
            name = value
        elif key == "cpu implementer" and implementer is None:
            implementer = value.lower()
        elif key == "cpu part" and part is None:
            part = value.lower()
    if not name and part:
        name = _ARM_PARTS.get(part, f"ARM implementer {implementer or '?'} part {part}") \
            if implementer in (None, "0x41") else f"ARM implementer {implementer} part {part}"
    return name, words, guessed


def _sysctl(name: str) -> str | None:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _darwin(arch: str) -> tuple[str, set[str], str]:
    """Best effort on macOS: sysctl names; Apple Silicon without readable sysctls counts as dotprod."""
    name = _sysctl("machdep.cpu.brand_string") or platform.processor() or arch
    if arch == "aarch64":
        values = {flag: _sysctl(key) for key, flag in _DARWIN_ARM.items()}
        flags = {flag for flag, value in values.items() if value == "1"}
        if all(value is None for value in values.values()):  # every Apple Silicon core (M1 and later) has dotprod
            flags.add("asimddp")
        return name, flags, "sysctl"
    words = " ".join(filter(None, [_sysctl("machdep.cpu.features"), _sysctl("machdep.cpu.leaf7_features")]))
    flags = {_DARWIN_X86[w] for w in words.upper().split() if w in _DARWIN_X86}
    return name, flags, "sysctl" if words else "platform"


def detect_int8_capability(cpuinfo: str | None = None, machine: str | None = None) -> Int8Capability:
    """This CPU's int8 capability, from /proc/cpuinfo and ``platform.machine()``; or another CPU's, from the
    text of its /proc/cpuinfo (``cpuinfo``) and ``machine`` (default: x86_64 for "flags", aarch64 for "Features").

    Without /proc/cpuinfo it is best effort: sysctl on macOS (Apple Silicon counts as ``arm64-dotprod`` unless
    sysctl reports FEAT_I8MM); elsewhere only ``platform.processor()`` is known, so x86 is "unknown".
    """
    source = "simulated" if cpuinfo is not None else "/proc/cpuinfo"
    if cpuinfo is None:
        with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            cpuinfo = handle.read()
    if cpuinfo is not None:
        name, words, guessed = _parse_cpuinfo(cpuinfo)
        arch = normalize_arch(machine) if machine else guessed or normalize_arch(platform.machine())
    else:
        arch = normalize_arch(machine or platform.machine())
        if platform.system() == "Darwin":
            name, words, source = _darwin(arch)
        else:
            name, words, source = platform.processor() or arch, set(), "platform"
    classes = _KERNEL_CLASSES.get("x86" if arch in X86_ARCHES else arch, ((None, "unknown", None),))
    flags = sorted({flag for flag, _, _ in classes if flag in words})
    kernel_class, can_saturate = next((kernel_class, saturates) for flag, kernel_class, saturates in classes
                                      if flag is None or flag in words)
    return Int8Capability(cpu=name or arch, arch=arch, flags=flags, kernel_class=kernel_class,
                          u8s8_can_saturate=can_saturate, source=source)


def describe(capability: Int8Capability) -> str:
    """One short line, e.g. ``AMD EPYC, x86-vnni (avx512_vnni): exact u8s8``."""
    x86 = capability.kernel_class.startswith("x86-")
    exact_flags = ("amx_int8", "avx512_vnni", "avx_vnni") if x86 else ("i8mm", "asimddp")
    why = ", ".join(f for f in exact_flags if f in capability.flags) or ("no VNNI" if x86 else capability.arch)
    verdict = {None: "u8s8 saturation unknown", True: "u8s8 can saturate (int16 pair sums)",
               False: "exact u8s8"}[capability.u8s8_can_saturate]
    return f"{capability.cpu}, {capability.kernel_class} ({why}): {verdict}"
