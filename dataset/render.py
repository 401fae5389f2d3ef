"""Rendering a scene's frames: background colour and pattern, the moving object and its bounces."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from dataset import portable_math as pm
from dataset.config import SynthConfig
from dataset.scenes import Scene
from dataset.vocabulary import BG_COLOURS, EVENT_SECONDS, OBJ_COLOURS

HALO_RADIUS = 1.45  # the halo ring flashed around the object at each event, in object radii


def event_envelope(t: np.ndarray, event_times: Sequence[float]) -> np.ndarray:
    """0..1 strength of the visible event at times t: a fast-rising bump over EVENT_SECONDS after each onset."""
    env = np.zeros_like(t)
    for onset in event_times:
        phase = (t - onset) / EVENT_SECONDS
        inside = (phase >= 0) & (phase <= 1)
        env = np.maximum(env, np.where(inside, np.sqrt(np.maximum(pm.sin_turns(0.5 * np.clip(phase, 0, 1)), 0)), 0))
    return env


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _pattern(scene: Scene, h: int, w: int, base: np.ndarray) -> np.ndarray:
    """(H, W, 3) background colour with its static pattern (plain, striped, checkered, dotted, gradient)."""
    yy, xx = _grid(h, w)
    turn = scene.pattern_angle / 360
    cos, sin = float(pm.cos_turns(turn)), float(pm.sin_turns(turn))
    period = scene.pattern_period * h / 96
    u = (xx * cos + yy * sin) / period + scene.pattern_phase
    v = (-xx * sin + yy * cos) / period + scene.pattern_phase
    if scene.pattern == "dotted":
        du, dv = (u % 1) - 0.5, (v % 1) - 0.5
        dots = np.clip((0.22 - np.sqrt(du * du + dv * dv)) * period, 0, 1)[..., None]
        return base + (255 - base) * 0.4 * dots
    if scene.pattern == "striped":
        shade = np.where(u % 1 < 0.5, 1.0, 0.55)
    elif scene.pattern == "checkered":
        shade = np.where((np.floor(u) + np.floor(v)) % 2 == 0, 1.0, 0.55)
    elif scene.pattern == "gradient":
        shade = 0.45 + 0.85 * (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
    else:  # plain
        shade = np.ones_like(u)
    return base * shade[..., None]


def render_background(scene: Scene, h: int, w: int) -> np.ndarray:
    """(H, W, 3) float32 background: colour, pattern and a static film grain, offset +0.5 so casts round."""
    base = np.array(BG_COLOURS[scene.bg_colour], np.float32) * scene.brightness
    grain = np.random.default_rng([scene.render_seed, 0]).random((h, w, 3), dtype=np.float32) - 0.5
    image = _pattern(scene, h, w, base) + grain * (scene.grain * math.sqrt(12.0))  # uniform noise, std scene.grain
    return (np.clip(image, 0, 255) + 0.5).astype(np.float32)


def shape_distance(kind: str, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, negative inside) to an object of `kind` and radius r.

    Only + - * / and sqrt: the star's five points come from cos(5 phi) = T5(cos phi), the Chebyshev
    polynomial, with cos phi = -dy / rho (phi the angle from the top), so no arctan2 or cos is needed."""
    if kind == "box":
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if kind == "triangle":  # apex up; circumradius 1.15 r
        edges = np.maximum(dy, np.maximum(0.866 * dx - 0.5 * dy, -0.866 * dx - 0.5 * dy))
        return edges - 0.575 * r
    rho = np.sqrt(dx * dx + dy * dy)
    if kind == "star":
        c = np.where(rho > 0, -dy / np.maximum(rho, 1e-6), 0)
        c2 = c * c
        return rho - r * (0.62 + 0.38 * (c * (16 * c2 * c2 - 20 * c2 + 5)))
    if kind == "ring":
        return np.maximum(rho - r, 0.55 * r - rho)
    return rho - r  # ball


def _object_centre(scene: Scene, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (fractions) at times t: a straight path plus a small wobble across it."""
    frac = t / scene.duration
    x = scene.start[0] + (scene.end[0] - scene.start[0]) * frac
    y = scene.start[1] + (scene.end[1] - scene.start[1]) * frac
    amp, freq, phase = scene.wobble
    offset = amp * pm.sin(2 * np.pi * freq * t + phase)
    if scene.motion in ("left-to-right", "right-to-left"):
        return x, y + offset
    return x + offset, y


class _Sprites(NamedTuple):
    """Premultiplied object layers (N, S, S, 3), their alpha (N, S, S, 1), and top-left corners (pixels)."""

    colour: np.ndarray
    alpha: np.ndarray
    x0: np.ndarray
    y0: np.ndarray


def _object_sprites(scene: Scene, cx: np.ndarray, cy: np.ndarray, env: np.ndarray, base_r: float) -> _Sprites:
    """The object (pulsing and brightening with each event) and, during events, a halo ring around it,
    rendered in a small window that follows the object."""
    r = (base_r * (1 + 0.35 * env)).astype(np.float32)[:, None, None]
    reach = int(np.ceil(base_r * 1.35 * (HALO_RADIUS + 0.1))) + 2
    x0, y0 = np.floor(cx).astype(int) - reach, np.floor(cy).astype(int) - reach
    local = np.arange(2 * reach, dtype=np.float32) + 0.5
    dx = local[None, None, :] + (x0 - cx).astype(np.float32)[:, None, None]
    dy = local[None, :, None] + (y0 - cy).astype(np.float32)[:, None, None]
    alpha = np.clip(0.5 - shape_distance(scene.kind, dx, dy, r), 0, 1)
    obj = np.array(OBJ_COLOURS[scene.obj_colour], np.float32)
    lit = obj + (255 - obj) * 0.45 * env[:, None] + 0.5  # +0.5: the final cast rounds
    colour = lit[:, None, None, :] * alpha[..., None]
    on = np.flatnonzero(env > 0)  # the halo only exists during events: compute it on those frames only
    if on.size:
        ring = np.abs(np.sqrt(dx[on] * dx[on] + dy[on] * dy[on]) - HALO_RADIUS * r[on]) - 0.08 * r[on]
        halo = np.clip(0.5 - ring, 0, 1) * (1 - alpha[on]) * (0.6 * env[on])[:, None, None]
        colour[on] += (obj + 0.5) * halo[..., None]
        alpha[on] += halo
    return _Sprites(colour, alpha[..., None], x0, y0)


def _paste(frames: np.ndarray, sprites: _Sprites) -> None:
    """Composite each frame's sprite over it in place (clipped at the frame edges)."""
    h, w = frames.shape[1:3]
    size = sprites.alpha.shape[1]
    keep = 1 - sprites.alpha
    for i, (x0, y0) in enumerate(zip(sprites.x0, sprites.y0)):
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + size, w), min(y0 + size, h)
        if xa < xb and ya < yb:
            window = (i, slice(ya - y0, yb - y0), slice(xa - x0, xb - x0))
            region = frames[i, ya:yb, xa:xb]
            region *= keep[window]
            region += sprites.colour[window]


def render_frames(scene: Scene, config: SynthConfig) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames: background, the moving object and its bounces (pulse, hop, halo)."""
    h, w = config.height, config.width
    t = np.arange(scene.n_frames) / config.fps
    env = event_envelope(t, scene.event_times).astype(np.float32)
    cx, cy = _object_centre(scene, t)
    base_r = scene.radius * h
    frames = np.repeat(render_background(scene, h, w)[None], scene.n_frames, axis=0)
    _paste(frames, _object_sprites(scene, cx * w, cy * h - 0.5 * base_r * env, env, base_r))
    return frames.astype(np.uint8)  # every value is already in [0.5, 255.5): the cast rounds
