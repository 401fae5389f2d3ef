"""Rendering a scene's sound: an ambient bed, one note per visible event, and a little hiss."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from dataset import portable_math as pm
from dataset.config import SynthConfig
from dataset.scenes import Scene
from dataset.vocabulary import NOTE_SECONDS

def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-9)


def _white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zero-mean, unit-variance white noise, uniform rather than Gaussian: numpy's normal sampler takes
    the C library's exp in some draws, uniform draws are plain arithmetic."""
    return (rng.random(n) - 0.5) * math.sqrt(12.0)


def _convolve_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """np.convolve(x, kernel, mode="same") as a fixed sum of shifted copies: numpy's convolve takes
    BLAS dot products, whose summation order differs between CPUs."""
    full = np.zeros(len(x) + len(kernel) - 1)
    for j, k in enumerate(kernel):
        full[j:j + len(x)] += k * x
    start = (len(kernel) - 1) // 2
    return full[start:start + max(len(x), len(kernel))]


def _shaped_noise(rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise filtered in the frequency domain by gain(f) (FFT at a power-of-two length: fast;
    numpy's pocketfft is plain C, the same code on every CPU)."""
    size = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(_white(rng, size))
    return _unit_rms(np.fft.irfft(spectrum * gain(np.fft.rfftfreq(size, 1 / sr)), size)[:n])


def _swell(rng: np.random.Generator, t: np.ndarray, lo: float, hi: float, depth: float) -> np.ndarray:
    return 1 - depth + depth * pm.sin(2 * np.pi * rng.uniform(lo, hi) * t + rng.uniform(0, 2 * np.pi))


def _rain(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    hiss = _shaped_noise(rng, len(t), sr, lambda f: f**2 / (f**2 + 400.0**2))
    drops = (rng.random(len(t)) < 60 / sr) * rng.uniform(-1, 1, len(t))
    crackle = _convolve_same(drops, pm.exp(-np.arange(48) / 6.0))
    return hiss + 2.5 * _unit_rms(crackle)


def _wind(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    return _shaped_noise(rng, len(t), sr, lambda f: 1 / (1 + (f / 350.0) ** 2)) * _swell(rng, t, 0.15, 0.45, 0.35)


def _hum(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    f0 = rng.uniform(55, 110)
    amps = (1.0, 0.6, 0.4, 0.25, 0.15)
    tone = sum(a * pm.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k, a in enumerate(amps, 1))
    return tone * _swell(rng, t, 0.5, 2.0, 0.05)


def _birdsong(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    out = 0.25 * _shaped_noise(rng, len(t), sr, lambda f: pm.exp(-(((f - 1800.0) / 900.0) ** 2)))  # rustling leaves
    for _ in range(int(rng.integers(4, 5 + 3 * int(t[-1] + 1)))):
        length = int(rng.uniform(0.06, 0.18) * sr)
        start = int(rng.integers(0, max(len(t) - length, 1)))
        f = np.linspace(rng.uniform(2500, 4500), rng.uniform(2000, 5000), length)
        out[start:start + length] += pm.sin_turns(np.cumsum(f) / sr) * pm.hann(length)[: len(out) - start]
    return out


def _traffic(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    brown = _shaped_noise(rng, len(t), sr, lambda f: 1 / (f + 20.0))
    return brown * _swell(rng, t, 0.1, 0.3, 0.4)


def _crickets(rng: np.random.Generator, t: np.ndarray, sr: int) -> np.ndarray:
    carrier = pm.sin_turns(rng.uniform(3800, 5200) * t)
    pulses = np.square(np.square(0.5 + 0.5 * pm.sin_turns(rng.uniform(25, 35) * t)))
    gate = pm.sin(2 * np.pi * rng.uniform(1.5, 3.0) * t + rng.uniform(0, 2 * np.pi)) > -0.2
    return carrier * pulses * (0.35 + 0.65 * gate)


AMBIENT_SYNTHS: dict[str, Callable[[np.random.Generator, np.ndarray, int], np.ndarray]] = {
    "rain": _rain, "wind": _wind, "hum": _hum, "birdsong": _birdsong, "traffic": _traffic, "crickets": _crickets,
}


def _additive(f: float, tt: np.ndarray, sr: int, amp: Callable[[int], float]) -> np.ndarray:
    """Band-limited periodic wave: harmonics k with amplitude amp(k), up to 0.45 * sr."""
    ks = [k for k in range(1, 16) if k * f < 0.45 * sr and amp(k)]
    return sum(amp(k) * pm.sin_turns(k * f * tt) for k in ks)


def note_wave(timbre: str, f: float, tt: np.ndarray, sr: int) -> np.ndarray:
    """One enveloped note of `timbre` at pitch f (Hz), sampled at tt seconds, peak about 1."""
    if timbre == "square":
        wave = _additive(f, tt, sr, lambda k: 1 / k if k % 2 else 0)
    elif timbre == "sawtooth":
        wave = _additive(f, tt, sr, lambda k: 1 / k)
    elif timbre == "triangle-wave":
        wave = _additive(f, tt, sr, lambda k: (-1) ** ((k - 1) // 2) / k**2 if k % 2 else 0)
    elif timbre == "fm-bell":
        wave = pm.sin(2 * np.pi * f * tt + 3 * pm.exp(-tt / 0.15) * pm.sin_turns(1.4 * f * tt))
    else:  # sine
        wave = pm.sin_turns(f * tt) + 0.1 * pm.sin_turns(2 * f * tt)
    envelope = (1 - pm.exp(-tt / 0.004)) * pm.exp(-tt / 0.12)
    return wave / max(float(np.abs(wave).max()), 1e-9) * envelope


def render_audio(scene: Scene, config: SynthConfig) -> np.ndarray:
    """float32 mono audio: ambient bed + one note per event (onset = visible event start) + hiss."""
    sr = config.sample_rate
    n = round(scene.n_frames / config.fps * sr)
    rng = np.random.default_rng([scene.render_seed, 1])
    t = np.arange(n) / sr
    audio = scene.ambient_level * _unit_rms(AMBIENT_SYNTHS[scene.ambient](rng, t, sr))
    tt = np.arange(int(NOTE_SECONDS * sr)) / sr
    note = scene.note_level * note_wave(scene.timbre, scene.pitch_hz, tt, sr)
    for onset in scene.event_times:
        i = round(onset * sr)
        seg = audio[i:i + len(note)]
        seg += rng.uniform(0.8, 1.0) * note[: len(seg)]
    audio += scene.hiss_level * _white(rng, n)
    peak = float(np.abs(audio).max())
    return (audio * min(1.0, 0.95 / max(peak, 1e-9))).astype(np.float32)
