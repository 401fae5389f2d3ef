"""The generated dataset is byte-identical at every CPU dispatch level this machine can be forced down to.

numpy, the C library, OpenBLAS and FFmpeg each choose SIMD code by CPU at run time; each level below
is a process started with all four forced down to what an older x86-64 CPU offers (tests/synth_probe.py
generates a small dataset covering every object kind, sound bed and pattern there). The generator's
files must come out the same at every level, while what CPU-dispatched code itself computes (the
probe's controls) does change between them: that is what the generator is protected from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest

from dataset import vocabulary

REPO = Path(__file__).resolve().parent.parent
AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
AVX = "AVX F16C FMA3 AVX2"
SSE4 = "SSSE3 SSE41 POPCNT SSE42"
GLIBC_AVX512 = "-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL,-AVX512ER,-AVX512PF"
GLIBC_AVX = "-AVX,-AVX2,-FMA,-FMA4,-F16C,-XOP,-BMI1,-BMI2,-LZCNT,-MOVBE"
GLIBC_SSE4 = "-SSSE3,-SSE4_1,-SSE4_2,-POPCNT"
# FFmpeg's AV_CPU_FLAG_* (libavutil/cpu.h)
FF_SSE2 = 0x1 | 0x2 | 0x8 | 0x10 | 0x1000  # MMX, MMXEXT, SSE, SSE2, CMOV
FF_SSE42 = FF_SSE2 | 0x40 | 0x80 | 0x100 | 0x200  # + SSE3, SSSE3, SSE4.1, SSE4.2
FF_AVX2 = FF_SSE42 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | 0x40000  # + AVX, AVX2, FMA3, BMI1, BMI2

# name -> the environment of a process at that level
LEVELS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {"NPY_DISABLE_CPU_FEATURES": AVX512, "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={GLIBC_AVX512}",
             "PROBE_FFMPEG_FLAGS": hex(FF_AVX2), "PROBE_X264_ASM": "AVX2,Cache64"},
    "sse4.2": {"NPY_DISABLE_CPU_FEATURES": f"{AVX512} {AVX}",
               "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={GLIBC_AVX512},{GLIBC_AVX}",
               "OPENBLAS_CORETYPE": "Nehalem", "PROBE_FFMPEG_FLAGS": hex(FF_SSE42), "PROBE_X264_ASM": "SSE4.2,Cache64"},
    "sse2": {"NPY_DISABLE_CPU_FEATURES": f"{AVX512} {AVX} {SSE4}",
             "GLIBC_TUNABLES": f"glibc.cpu.hwcaps={GLIBC_AVX512},{GLIBC_AVX},{GLIBC_SSE4}",
             "OPENBLAS_CORETYPE": "Prescott", "PROBE_FFMPEG_FLAGS": hex(FF_SSE2), "PROBE_X264_ASM": "SSE2,Cache64"},
    "c": {"NPY_DISABLE_CPU_FEATURES": f"{AVX512} {AVX} {SSE4}", "OPENBLAS_CORETYPE": "Prescott",
          "PROBE_FFMPEG_FLAGS": "0", "PROBE_X264_ASM": "0"},
}


@lru_cache(maxsize=None)
def probe(level: str, out: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NPY_DISABLE_CPU_FEATURES", "GLIBC_TUNABLES",
                                                           "OPENBLAS_CORETYPE")}
    proc = subprocess.run([sys.executable, "-m", "tests.synth_probe", out], cwd=REPO, env={**env, **LEVELS[level]},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"probe at level {level} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> dict[str, dict]:
    return {level: probe(level, str(tmp_path_factory.mktemp(level))) for level in LEVELS}


def test_the_probe_dataset_covers_every_kind_sound_and_pattern(probes):
    covers = probes["native"]["covers"]
    assert covers["kind"] == sorted(vocabulary.KINDS)
    assert covers["ambient"] == sorted(vocabulary.AMBIENTS)
    assert covers["pattern"] == sorted(vocabulary.PATTERNS)


@pytest.mark.parametrize("level", [lv for lv in LEVELS if lv != "native"])
def test_every_file_is_byte_identical_at_a_forced_dispatch_level(probes, level):
    native, forced = probes["native"]["files"], probes[level]["files"]
    assert sorted(forced) == sorted(native)
    differ = sorted(name for name in native if forced[name] != native[name])
    assert not differ, f"{len(differ)} of {len(native)} files differ at level {level}: {differ[:10]}"


def test_the_levels_were_really_forced(probes):
    native = set(probes["native"]["numpy"])
    for level, env in LEVELS.items():
        disabled = set(env.get("NPY_DISABLE_CPU_FEATURES", "").split())
        still = disabled & set(probes[level]["numpy"])
        assert not still, f"{level}: numpy still uses {still}"
        assert set(probes[level]["numpy"]) == native - disabled
        if "PROBE_FFMPEG_FLAGS" in env:
            assert probes[level]["ffmpeg"] == probes["native"]["ffmpeg"] & int(env["PROBE_FFMPEG_FLAGS"], 16)


def test_what_cpu_dispatched_code_computes_does_change_between_the_levels(probes):
    """Without this the identity above would prove nothing: the unpinned encoders and numpy's own kernels
    give other bytes at the lower levels on this machine (compared where it has the features to lose)."""
    native = probes["native"]
    changed = {level: sorted(k for k, v in probes[level]["controls"].items() if v != native["controls"][k])
               for level in LEVELS if level != "native"}
    assert "unpinned encoding" in changed["c"], changed  # FFmpeg's C code vs its SIMD, x264 C vs its SIMD
    if "SSSE3" in native["numpy"]:
        assert "unpinned encoding" in changed["sse2"], changed  # x264 without SSSE3 analyses intra modes otherwise
    if "FMA3" in native["numpy"]:
        assert "np.cos f32" in changed["sse4.2"], changed
    if "AVX512_SKX" in native["numpy"]:
        assert "np.arctan2 f32" in changed["avx2"], changed  # what made data.dvc differ between machines
