"""Synthetic faces with exactly known landmarks: test data and the embedded demo competition.

Faces are drawn from the mean iBUG 68-point shape (measured on 300-W) under a random similarity
transform, with per-face shape noise, lighting and sensor noise. Both competitions' test
generators and `kit demo` build on this, so no test needs ../shared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Mean 300-W shape: origin at the outer-eye-corner midpoint, unit outer-eye-corner distance.
# fmt: off
MEAN_SHAPE_68 = np.array([
    [-0.818, 0.021], [-0.813, 0.238], [-0.789, 0.456], [-0.742, 0.666], [-0.656, 0.859],
    [-0.522, 1.027], [-0.361, 1.165], [-0.185, 1.272], [0.01, 1.3], [0.202, 1.264],
    [0.373, 1.154], [0.53, 1.018], [0.658, 0.852], [0.745, 0.661], [0.792, 0.454],
    [0.816, 0.241], [0.828, 0.026], [-0.667, -0.143], [-0.564, -0.24], [-0.419, -0.271],
    [-0.268, -0.252], [-0.13, -0.198], [0.132, -0.207], [0.278, -0.257], [0.428, -0.273],
    [0.57, -0.237], [0.665, -0.14], [0.005, -0.028], [0.005, 0.11], [0.006, 0.245],
    [0.007, 0.385], [-0.171, 0.488], [-0.085, 0.518], [0.004, 0.541], [0.092, 0.518],
    [0.17, 0.491], [-0.5, 0.0], [-0.407, -0.051], [-0.299, -0.048], [-0.208, 0.019],
    [-0.303, 0.036], [-0.412, 0.036], [0.208, 0.019], [0.306, -0.052], [0.413, -0.05],
    [0.5, 0.0], [0.419, 0.035], [0.313, 0.037], [-0.317, 0.751], [-0.196, 0.698],
    [-0.077, 0.674], [-0.001, 0.694], [0.084, 0.675], [0.204, 0.702], [0.317, 0.75],
    [0.206, 0.863], [0.09, 0.913], [-0.0, 0.922], [-0.084, 0.914], [-0.201, 0.864],
    [-0.268, 0.756], [-0.078, 0.742], [-0.001, 0.75], [0.084, 0.742], [0.269, 0.756],
    [0.085, 0.808], [-0.001, 0.819], [-0.08, 0.81],
], dtype=np.float32)

# FKD's 15 keypoints from iBUG 68 (the fkd-proxy mapping); tuples are averaged.
FKD_FROM_68: tuple[tuple[int, ...], ...] = (
    tuple(range(42, 48)), tuple(range(36, 42)), (42,), (45,), (39,), (36,),
    (22,), (26,), (21,), (17,), (30,), (54,), (48,), (51,), (57,),
)

# fmt: on

_SUPERSAMPLE = 3


def fkd15_from_68(points: np.ndarray) -> np.ndarray:
    """(N, 68, 2) iBUG landmarks -> (N, 15, 2) FKD keypoints."""
    return np.stack([points[:, list(idx)].mean(axis=1) for idx in FKD_FROM_68], axis=1)


def sample_shapes(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 68, 2) landmark sets in pixels of a size x size image, FKD-like framing."""
    shape = MEAN_SHAPE_68[None] + rng.normal(0, 0.025, (n, 68, 2)).astype(np.float32)
    yaw = rng.normal(0, 0.08, (n, 1))  # nose and mouth drift sideways as the head turns
    shape[:, 27:36, 0] += yaw
    shape[:, 48:68, 0] += 0.6 * yaw
    scale = size * 0.36 * rng.normal(1, 0.07, n)
    angle = np.deg2rad(rng.normal(0, 7, n))
    centre = np.stack(
        [
            size * 0.5 + rng.normal(0, size * 0.025, n),
            size * 0.385 + rng.normal(0, size * 0.025, n),
        ],
        axis=1,
    )
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    rot = np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)  # (n, 2, 2)
    return (np.einsum("nij,nkj->nki", rot, shape) + centre[:, None]).astype(np.float32)


def _poly(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


def render_face(points: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one face whose landmarks are `points` (68, 2); returns uint8 (size, size)."""
    f = _SUPERSAMPLE
    p = points * f + (f - 1) / 2  # pixel centres stay aligned after the box downsample
    big = size * f
    gradient = np.linspace(rng.uniform(20, 120), rng.uniform(20, 120), big)[None, :]
    canvas = Image.fromarray(np.repeat(gradient, big, 0).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    skin = int(rng.uniform(140, 210))
    brow_lift = (p[19] - p[8]) * 0.35  # forehead above the brows
    outline = np.concatenate([p[0:17], (p[26:16:-1] + brow_lift)])
    draw.polygon(_poly(outline), fill=skin)
    width = max(1, round(f * size / 64))
    for a, b in ((17, 22), (22, 27)):
        draw.line(_poly(p[a:b]), fill=skin - 110, width=2 * width)
    for a, b in ((36, 42), (42, 48)):
        draw.polygon(_poly(p[a:b]), fill=235)
        c = p[a:b].mean(0)
        r = 0.28 * np.linalg.norm(p[a + 3] - p[a])
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=25)
    draw.line(_poly(p[27:31]), fill=skin - 45, width=width)
    draw.line(_poly(p[31:36]), fill=skin - 70, width=width)
    draw.polygon(_poly(p[48:60]), fill=int(rng.uniform(70, 120)))
    draw.polygon(_poly(p[60:68]), fill=30)
    small = canvas.reduce(f).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    img = np.asarray(small, np.float32)
    img = (img - 128) * rng.uniform(0.7, 1.2) + 128 + rng.uniform(-25, 25)
    img += rng.normal(0, rng.uniform(1, 6), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def make_faces(n: int, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic faces: uint8 images (n, size, size) and float32 landmarks (n, 68, 2)."""
    rng = np.random.default_rng(seed)
    points = sample_shapes(n, size, rng)
    images = (
        np.stack([render_face(pt, size, rng) for pt in points])
        if n
        else np.zeros((0, size, size), np.uint8)
    )
    return images, points


# --------------------------------------------------------------------- synthetic people
# Faces of a few made-up people for identity grouping (kit.data.identity): each person keeps a
# face shape and a look; each face varies in pose, expression and lighting.


@dataclass(frozen=True)
class Person:
    """A made-up person: landmarks in mean-shape units and a fixed look (grey levels 0-255)."""

    shape: np.ndarray  # (68, 2)
    skin: float
    hair: float
    hairline: float  # share of the forehead the hair covers
    brow: float  # brow thickness factor
    lip: float
    moles: np.ndarray  # (M, 2) dark spots, mean-shape units
    glasses: bool
    beard: bool
    texture: np.ndarray  # (T, T) skin relief over _TEXTURE_BOX, grey levels


def make_person(rng: np.random.Generator) -> Person:
    shape = MEAN_SHAPE_68.copy()
    shape[36:48, 0] *= rng.uniform(0.88, 1.12)  # eye spacing
    shape[27:36, 1] = (shape[27:36, 1] - 0.3) * rng.uniform(0.8, 1.2) + 0.3  # nose length
    shape[48:68, 0] *= rng.uniform(0.8, 1.2)  # mouth width
    shape[0:17, 0] *= rng.uniform(0.88, 1.12)  # face width
    shape[17:27, 1] -= rng.uniform(-0.06, 0.08)  # brow height
    shape += rng.normal(0, 0.02, shape.shape).astype(np.float32)
    return Person(
        shape=shape,
        skin=rng.uniform(115, 215),
        hair=rng.uniform(15, 95),
        hairline=rng.uniform(0.05, 0.45),
        brow=rng.uniform(0.6, 1.6),
        lip=rng.uniform(60, 130),
        moles=rng.uniform([-0.7, -0.1], [0.7, 1.1], (int(rng.integers(0, 4)), 2)),
        glasses=bool(rng.random() < 0.3),
        beard=bool(rng.random() < 0.25),
        # Real faces differ in fine structure, not only in tone; HOG/LBP see only structure.
        texture=rng.normal(0, rng.uniform(8, 16), (_TEXTURE_SIDE, _TEXTURE_SIDE)),
    )


_TEXTURE_SIDE = 14
_TEXTURE_BOX = (-1.0, -0.6, 1.0, 1.4)  # x0, y0, x1, y1 in mean-shape units


def _texture_at(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture values at (..., 2) mean-shape coordinates (edges clamped)."""
    x0, y0, x1, y1 = _TEXTURE_BOX
    side = texture.shape[0] - 1
    gx = np.clip((uv[..., 0] - x0) / (x1 - x0) * side, 0, side - 1e-6)
    gy = np.clip((uv[..., 1] - y0) / (y1 - y0) * side, 0, side - 1e-6)
    ix, iy = gx.astype(int), gy.astype(int)
    fx, fy = gx - ix, gy - iy
    top = texture[iy, ix] * (1 - fx) + texture[iy, ix + 1] * fx
    bottom = texture[iy + 1, ix] * (1 - fx) + texture[iy + 1, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _pose(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random similarity (2x2 matrix, centre) from mean-shape units to FKD-like pixels."""
    scale = size * 0.36 * rng.normal(1, 0.05)
    angle = np.deg2rad(rng.normal(0, 6))
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    centre = np.array([size * 0.5, size * 0.385]) + rng.normal(0, size * 0.02, 2)
    return np.array([[cos, -sin], [sin, cos]]), centre


def render_person(
    person: Person, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One face of `person` in a random pose, expression and lighting: uint8 (size, size)
    image and float32 (68, 2) landmarks in pixels."""
    shape = person.shape + rng.normal(0, 0.012, (68, 2)).astype(np.float32)
    shape[56:59, 1] += rng.uniform(0, 0.12)  # the mouth opens: lower lip ...
    shape[65:68, 1] += rng.uniform(0, 0.08)  # ... and inner lower lip drop
    shape[48:60, 0] *= rng.uniform(0.95, 1.1)  # a smile widens it
    yaw = rng.normal(0, 0.08)  # nose and mouth drift sideways as the head turns
    shape[27:36, 0] += yaw
    shape[48:68, 0] += 0.6 * yaw
    rot, centre = _pose(size, rng)
    points = (shape @ rot.T + centre).astype(np.float32)

    f = _SUPERSAMPLE
    p = points * f + (f - 1) / 2
    big = size * f
    gradient = np.linspace(rng.uniform(20, 140), rng.uniform(20, 140), big)[None, :]
    canvas = Image.fromarray(np.repeat(gradient, big, 0).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    skin, hair = int(person.skin), int(person.hair)
    up = p[19] - p[8]  # chin to brow
    crown = p[26:16:-1] + up * 0.9
    draw.polygon(_poly(np.concatenate([p[0:1] + up * 0.1, crown, p[16:17] + up * 0.1])), fill=hair)
    draw.polygon(_poly(np.concatenate([p[0:17], p[26:16:-1] + up * 0.35])), fill=skin)
    hairline = p[26:16:-1] + up * 0.35 * (1 - person.hairline)
    draw.polygon(_poly(np.concatenate([crown, hairline[::-1]])), fill=hair)
    if person.beard:
        chin = np.concatenate([p[3:14], p[54:59][::-1] + np.array([0, f])])
        draw.polygon(_poly(chin), fill=skin - 60)
    width = max(1, round(f * size / 64))
    for a, b in ((17, 22), (22, 27)):
        draw.line(_poly(p[a:b]), fill=skin - 110, width=round(2 * width * person.brow))
    for a, b in ((36, 42), (42, 48)):
        draw.polygon(_poly(p[a:b]), fill=235)
        c = p[a:b].mean(0)
        r = 0.28 * np.linalg.norm(p[a + 3] - p[a])
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=25)
        if person.glasses:
            w, h = 3.0 * r, 1.9 * r
            draw.ellipse([c[0] - w, c[1] - h, c[0] + w, c[1] + h], outline=10, width=width)
    draw.line(_poly(p[27:31]), fill=skin - 45, width=width)
    draw.line(_poly(p[31:36]), fill=skin - 70, width=width)
    draw.polygon(_poly(p[48:60]), fill=int(person.lip))
    draw.polygon(_poly(p[60:68]), fill=30)
    for mole in person.moles:
        c = (mole @ rot.T + centre) * f + (f - 1) / 2
        draw.ellipse(
            [c[0] - 0.7 * f, c[1] - 0.7 * f, c[0] + 0.7 * f, c[1] + 0.7 * f], fill=skin - 90
        )
    small = canvas.reduce(f).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    img = np.asarray(small, np.float32)
    mask = Image.new("L", (big, big))
    ImageDraw.Draw(mask).polygon(
        _poly(np.concatenate([p[0:17], p[26:16:-1] + up * 0.35])), fill=255
    )
    pixels = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1) - centre
    uv = pixels @ np.linalg.inv(rot).T  # pixel -> mean-shape units (pose only)
    img += _texture_at(person.texture, uv) * (np.asarray(mask.reduce(f), np.float32) / 255)
    side_light = np.linspace(-1, 1, size)[None, :] * rng.uniform(-25, 25)
    img = (img - 128) * rng.uniform(0.75, 1.2) + 128 + rng.uniform(-20, 20) + side_light
    img += rng.normal(0, rng.uniform(1, 5), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), points


def make_people(
    n_people: int, faces_per_person: int, size: int = 96, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """faces_per_person faces of each of n_people made-up people, rows shuffled: uint8 images
    (N, size, size), float32 landmarks (N, 68, 2) and int64 person labels (N,)."""
    rng = np.random.default_rng(seed)
    people = [make_person(rng) for _ in range(n_people)]
    labels = rng.permutation(np.repeat(np.arange(n_people, dtype=np.int64), faces_per_person))
    if not len(labels):
        return np.zeros((0, size, size), np.uint8), np.zeros((0, 68, 2), np.float32), labels
    faces = [render_person(people[k], size, rng) for k in labels]
    return np.stack([img for img, _ in faces]), np.stack([pt for _, pt in faces]), labels
