"""The CPU's int8 capability, from simulated /proc/cpuinfo texts of real CPU families."""

from __future__ import annotations

import json
import platform

import pytest

from ssd_eval.config.schema import KERNEL_CLASSES
from ssd_eval.inference.cpu import Int8Capability, describe, detect_int8_capability

BASE_X86 = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 " \
           "ht syscall nx lm constant_tsc rep_good nopl xtopology cpuid pni pclmulqdq ssse3 fma cx16 sse4_1 " \
           "sse4_2 movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm abm"


def x86(model: str, extra: str) -> str:
    """A two-processor x86 /proc/cpuinfo with the given model name and extra flags."""
    block = (f"processor\t: {{n}}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel name\t: {model}\n"
             f"flags\t\t: {BASE_X86} {extra}\nbogomips\t: 4000.00\n\n")
    return block.format(n=0) + block.format(n=1)


EPYC_AVX2 = x86("AMD EPYC 7B12", "avx2 bmi1 bmi2 sha_ni clzero")
CASCADE_LAKE = x86("Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz",
                   "avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni")
SKYLAKE_SP = x86("Intel(R) Xeon(R) Platinum 8168 CPU @ 2.70GHz", "avx2 avx512f avx512dq avx512cd avx512bw avx512vl")
ALDER_LAKE = x86("12th Gen Intel(R) Core(TM) i7-12700H", "avx2 avx_vnni")
SAPPHIRE_RAPIDS = x86("Intel(R) Xeon(R) Platinum 8480+", "avx2 avx512f avx512bw avx512_vnni avx_vnni amx_bf16 "
                                                         "amx_tile amx_int8")
SSE41_ONLY = x86("Intel(R) Xeon(R) CPU E5440", "")
NEOVERSE = ("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
            "fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat "
            "ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint "
            "svei8mm svebf16 i8mm bf16 dgh\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
            "CPU part\t: 0xd4f\nCPU revision\t: 1\n\n")
GRAVITON2 = ("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
             "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
             "CPU part\t: 0xd0c\n\n")


@pytest.mark.parametrize("cpuinfo, cpu, kernel_class, flags, saturates", [
    (EPYC_AVX2, "AMD EPYC 7B12", "x86-avx2", ["avx2", "sse4_1"], True),
    (CASCADE_LAKE, "Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz", "x86-vnni",
     ["avx2", "avx512_vnni", "avx512bw", "sse4_1"], False),
    (SKYLAKE_SP, "Intel(R) Xeon(R) Platinum 8168 CPU @ 2.70GHz", "x86-avx512", ["avx2", "avx512bw", "sse4_1"], True),
    (ALDER_LAKE, "12th Gen Intel(R) Core(TM) i7-12700H", "x86-vnni", ["avx2", "avx_vnni", "sse4_1"], False),
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8480+", "x86-amx",
     ["amx_int8", "avx2", "avx512_vnni", "avx512bw", "avx_vnni", "sse4_1"], False),
    (SSE41_ONLY, "Intel(R) Xeon(R) CPU E5440", "x86-sse4.1", ["sse4_1"], True),
    (NEOVERSE, "Neoverse-V2", "arm64-i8mm", ["asimddp", "i8mm"], False),
    (GRAVITON2, "Neoverse-N1", "arm64-dotprod", ["asimddp"], False),
], ids=["epyc-avx2", "cascade-lake", "skylake-sp", "alder-lake", "sapphire-rapids", "sse4.1", "neoverse-v2",
        "graviton2"])
def test_simulated_cpus(cpuinfo, cpu, kernel_class, flags, saturates):
    capability = detect_int8_capability(cpuinfo)
    assert capability.cpu == cpu
    assert capability.kernel_class == kernel_class
    assert capability.flags == flags
    assert capability.u8s8_can_saturate is saturates
    assert capability.arch == ("aarch64" if kernel_class.startswith("arm64") else "x86_64")
    assert capability.source == "simulated"


def test_machine_argument_names_the_architecture():
    assert detect_int8_capability(NEOVERSE, machine="arm64").arch == "aarch64"
    assert detect_int8_capability(EPYC_AVX2, machine="AMD64").kernel_class == "x86-avx2"


def test_unreadable_flags_are_unknown_not_a_guess():
    capability = detect_int8_capability("processor\t: 0\nmodel name\t: Mystery CPU\n", machine="x86_64")
    assert capability.kernel_class == "unknown"
    assert capability.u8s8_can_saturate is None
    assert "unknown" in describe(capability)


def test_bare_arm64_is_exact():
    capability = detect_int8_capability("processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\n"
                                        "CPU part\t: 0xd08\n")
    assert (capability.kernel_class, capability.u8s8_can_saturate, capability.cpu) == ("arm64", False, "Cortex-A72")


def test_describe_and_to_dict():
    assert describe(detect_int8_capability(CASCADE_LAKE)) == \
        "Intel(R) Xeon(R) Platinum 8280 CPU @ 2.70GHz, x86-vnni (avx512_vnni): exact u8s8"
    assert describe(detect_int8_capability(EPYC_AVX2)) == \
        "AMD EPYC 7B12, x86-avx2 (no VNNI): u8s8 can saturate (int16 pair sums)"
    assert describe(detect_int8_capability(NEOVERSE)) == "Neoverse-V2, arm64-i8mm (i8mm, asimddp): exact u8s8"
    data = detect_int8_capability(ALDER_LAKE).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"cpu", "arch", "flags", "kernel_class", "u8s8_can_saturate", "source"}


def test_this_machine():
    capability = detect_int8_capability()
    assert isinstance(capability, Int8Capability)
    assert capability.kernel_class in KERNEL_CLASSES
    if platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64"):
        assert capability.kernel_class != "unknown"
        assert capability.u8s8_can_saturate is not None
