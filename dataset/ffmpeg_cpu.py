"""Run FFmpeg on its portable C code: libavutil's CPU-flag override, for encodings that must be byte-identical.

FFmpeg picks SIMD code by CPU when a codec opens (av_get_cpu_flags), and some of it rounds
differently from the C code it replaces: the float DSP under the AAC encoder changes the encoded
bytes of about one clip in eight between its C and SSE/AVX paths. `portable_cpu_paths()` forces the
flags to 0 (C code everywhere) while it is held and restores them after, so whatever opens inside it
encodes the same bytes on every x86-64 CPU. The override is process-wide: decoders opened meanwhile
in other threads run their C code too (slower, same results). Nested and concurrent holders share one
override.

The library is the libavutil PyAV loaded (found through /proc/self/maps, else beside the av package).
Where it cannot be found, the context does nothing and `pinned()` says so.
"""

from __future__ import annotations

import ctypes
import glob
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

_lock = threading.Lock()
_holders = 0
_saved_flags: int | None = None


def _loaded_avutil() -> str | None:
    """Path of the libavutil mapped into this process (Linux), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "libavutil" in line and "/" in line}
    return min(paths) if paths else None


def _bundled_avutil() -> str | None:
    """libavutil shipped beside the av package (Linux and macOS wheels), or None."""
    import av

    here = Path(av.__file__).resolve().parent
    for pattern in ("../av.libs/libavutil*", ".dylibs/libavutil*", "../pyav.libs/libavutil*"):
        found = sorted(glob.glob(str(here / pattern)))
        if found:
            return found[0]
    return None


@lru_cache(maxsize=1)
def _avutil() -> ctypes.CDLL | None:
    import av  # noqa: F401  (loads libavutil, so that its path appears in the process's maps)

    path = _loaded_avutil() or _bundled_avutil()
    if path is None:
        return None
    lib = ctypes.CDLL(path)  # the library already loaded: same handle, same global flags
    lib.av_get_cpu_flags.restype = ctypes.c_int
    lib.av_force_cpu_flags.argtypes = [ctypes.c_int]
    return lib


def pinned() -> bool:
    """Whether FFmpeg's CPU flags can be forced in this process."""
    return _avutil() is not None


def cpu_flags() -> int:
    """The CPU flags FFmpeg uses now (0: C code only); -1 when libavutil cannot be reached."""
    lib = _avutil()
    return -1 if lib is None else int(lib.av_get_cpu_flags())


def force_cpu_flags(flags: int) -> None:
    """Set FFmpeg's CPU flags for this process (av_force_cpu_flags; -1: detect them again)."""
    lib = _avutil()
    if lib is not None:
        lib.av_force_cpu_flags(flags)


@contextmanager
def portable_cpu_paths() -> Iterator[None]:
    """FFmpeg runs its C code (CPU flags 0) while any holder is inside; then the flags come back."""
    global _holders, _saved_flags
    lib = _avutil()
    if lib is None:
        warnings.warn("cannot reach FFmpeg's libavutil to force its portable code paths: encoded bytes may "
                      "differ between CPUs", RuntimeWarning, stacklevel=3)
        yield
        return
    with _lock:
        if _holders == 0:
            _saved_flags = int(lib.av_get_cpu_flags())
            lib.av_force_cpu_flags(0)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                lib.av_force_cpu_flags(_saved_flags)
