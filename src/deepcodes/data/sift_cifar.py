"""SIFT1M-CIFAR: over a million real 128-d SIFT descriptors from the bundled CIFAR-10 images.

Recipe (deterministic): each image is converted to grey, upsampled x4 by bicubic interpolation to
128x128, and OpenCV SIFT descriptors are computed (``cv2.SIFT_create().compute``, no detection) on
fixed dense grids of upright keypoints: by default an 11x11 grid of size-16 keypoints plus a 4x4
grid of size-32 keypoints, 137 per image. 1,000 images drawn with ``default_rng(0)`` are held out:
one descriptor of each (a keypoint drawn by the same generator) is a query, and none of their
descriptors enters the base, which holds every descriptor of the other 9,000 images (1,233,000
vectors), in image order then keypoint order.

OpenCV scales SIFT descriptors by 512 after the 0.2 clipping and saturates them to 0..255, which
is the TEXMEX convention, so they are stored as uint8 exactly (the builder checks that they are
integral). Files, in ``cache_dir()/sift1m-cifar`` unless told otherwise, each written atomically:

* ``base.bvecs`` (N, 128), ``queries.bvecs`` (1000, 128);
* ``groundtruth.ivecs`` (1000, 100): exact squared-L2 top-100 ids, ties to the lower id;
* ``manifest.json``: sizes, recipe, query images and keypoints, sha256 of each file. It is
  written last, so its presence marks a complete build.

Extraction runs in one thread per core, a chunk of images at a time; every finished chunk is saved
under a ``.parts-*`` folder, so an interrupted build resumes where it stopped.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError
from ..persist import atomic_save_npy, atomic_write_bytes, file_sha256
from ..validation import check_int
from .datasets import load_cifar10
from .formats import read_bvecs, read_ivecs, write_bvecs, write_ivecs
from .groundtruth import cache_dir, exact_knn

__all__ = ["build", "load_sift_cifar", "default_dir", "extract_descriptors", "DEFAULT_GRIDS"]

log = logging.getLogger(__name__)

NAME = "sift1m-cifar"
FORMAT_VERSION = 1
DIM = 128
UPSAMPLE = 4
# (points per side, keypoint size in pixels of the upsampled image)
DEFAULT_GRIDS = ((11, 16), (4, 32))
N_CIFAR = 10000  # images in the bundled CIFAR-10 test split
_CHUNK = 250
_FILES = ("base.bvecs", "queries.bvecs", "groundtruth.ivecs")


def default_dir() -> Path:
    """Where the dataset is built by default: ``cache_dir()/sift1m-cifar``."""
    return cache_dir() / NAME


def _keypoints(grids, side: int):
    import cv2

    kps = []
    for n, size in grids:
        # Centres span the image with half a keypoint of margin, row by row.
        centres = np.linspace(size / 2, side - size / 2, n)
        kps += [cv2.KeyPoint(float(x), float(y), float(size), 0.0) for y in centres for x in centres]
    return kps


def extract_descriptors(images: np.ndarray, grids=DEFAULT_GRIDS) -> np.ndarray:
    """Dense SIFT descriptors of RGB ``images`` (n, 32, 32, 3) uint8: uint8 (n, n_keypoints, 128)."""
    import cv2

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise InputError(f"images must be uint8 (n, h, w, 3), got {images.dtype} {images.shape}")
    h, w = images.shape[1:3]
    if h != w:
        raise InputError(f"images must be square, got {h}x{w}")
    side = UPSAMPLE * h
    kps = _keypoints(grids, side)
    sift = cv2.SIFT_create()
    out = np.empty((images.shape[0], len(kps), DIM), dtype=np.uint8)
    for i, img in enumerate(images):
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_CUBIC)
        got, desc = sift.compute(grey, kps)
        if desc is None or len(got) != len(kps):
            raise RuntimeError(f"OpenCV SIFT dropped keypoints ({0 if desc is None else len(got)} of {len(kps)})")
        rounded = np.rint(desc)
        # OpenCV already saturates to integers 0..255; anything else means a changed convention.
        if np.abs(desc - rounded).max() > 1e-3 or rounded.min() < 0 or rounded.max() > 255:
            raise RuntimeError("OpenCV SIFT descriptors are not integers in 0..255 (changed OpenCV convention?)")
        out[i] = rounded.astype(np.uint8)
    return out


def _check_grids(grids) -> tuple[tuple[int, int], ...]:
    try:
        grids = tuple((int(n), int(size)) for n, size in grids)
    except (TypeError, ValueError):
        raise InputError(f"grids must be a sequence of (points per side, keypoint size) pairs, got {grids!r}") from None
    if not grids or any(n < 1 or size < 2 for n, size in grids):
        raise InputError(f"grids need at least one (n >= 1, size >= 2) pair, got {grids!r}")
    return grids


def _recipe(n_images, n_queries, grids, k, seed) -> dict:
    import cv2

    return {
        "source": "cifar10/cifar10_test_png.npz (first n_images rows)",
        "grey": "cv2.COLOR_RGB2GRAY", "upsample": UPSAMPLE, "interpolation": "cv2.INTER_CUBIC",
        "grids": [list(g) for g in grids], "keypoint_angle": 0.0,
        "keypoints_per_image": sum(n * n for n, _ in grids),
        "descriptor": "cv2.SIFT_create().compute, uint8 (OpenCV's 0..255 integer scaling)",
        "n_images": n_images, "n_queries": n_queries, "query_seed": seed, "k": k,
        "opencv": cv2.__version__,
    }


def _read_manifest(out_dir: Path) -> dict | None:
    path = out_dir / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("ignoring unreadable manifest %s (%s)", path, exc)
        return None
    return manifest if isinstance(manifest, dict) else None


def _manifest_problem(manifest: dict | None, out_dir: Path, recipe: dict, verify: bool) -> str | None:
    """Why the build in ``out_dir`` cannot be reused, or None when it can."""
    if manifest is None:
        return "no manifest"
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("name") != NAME:
        return f"manifest format {manifest.get('format_version')!r} is not {FORMAT_VERSION}"
    old = {key: value for key, value in manifest.get("recipe", {}).items() if key != "opencv"}
    if old != {key: value for key, value in recipe.items() if key != "opencv"}:
        return "a different recipe"
    for name in _FILES:
        entry = manifest.get("files", {}).get(name, {})
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return f"{name} is missing or has the wrong size"
        if verify and file_sha256(path) != entry.get("sha256"):
            return f"{name} does not match its sha256"
    return None


def _split(n_images: int, n_queries: int, n_kp: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out query images (sorted) and the keypoint drawn for each."""
    rng = np.random.default_rng(seed)
    query_images = np.sort(rng.choice(n_images, size=n_queries, replace=False))
    query_kp = rng.integers(0, n_kp, size=n_queries)
    return query_images, query_kp


def _extract_all(images: np.ndarray, grids, parts: Path, n_jobs: int, progress: bool) -> np.ndarray:
    """Descriptors (n, n_kp, 128) of every image; finished chunks are kept in ``parts`` and reused."""
    from tqdm.auto import tqdm

    n = images.shape[0]
    n_kp = sum(g * g for g, _ in grids)
    out = np.empty((n, n_kp, DIM), dtype=np.uint8)
    todo = []
    for c, start in enumerate(range(0, n, _CHUNK)):
        stop = min(n, start + _CHUNK)
        path = parts / f"chunk{c:05d}.npy"
        try:
            part = np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError, EOFError):
            part = None
        if part is not None and part.shape == (stop - start, n_kp, DIM) and part.dtype == np.uint8:
            out[start:stop] = part
        else:
            todo.append((path, start, stop))
    if len(todo) < -(-n // _CHUNK):
        log.info("resuming: %d of %d chunks already extracted", -(-n // _CHUNK) - len(todo), -(-n // _CHUNK))
    bar = tqdm(total=n, initial=n - sum(stop - start for _, start, stop in todo), unit="img",
               desc="dense SIFT", disable=not progress)
    import cv2

    # OpenCV releases the GIL inside SIFT, so threads (one per core, OpenCV's own pool off while
    # they run) use every core without the re-import pitfalls of worker processes.
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        pool = concurrent.futures.ThreadPoolExecutor(n_jobs)
        try:
            futures = {pool.submit(extract_descriptors, images[start:stop], grids): (path, start, stop)
                       for path, start, stop in todo}
            for fut in concurrent.futures.as_completed(futures):
                path, start, stop = futures[fut]
                out[start:stop] = fut.result()
                atomic_save_npy(path, out[start:stop])
                bar.update(stop - start)
        finally:
            # On an error or an interrupt, drop the chunks not started; the saved ones stay for a resume.
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        cv2.setNumThreads(cv2_threads)
        bar.close()
    return out


@contextlib.contextmanager
def _lock(out_dir: Path):
    # Two builds of the same folder (a benchmark and the CLI, say) would duplicate minutes of
    # work; the second waits for the first and then finds its manifest.
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(out_dir: Path | None = None, progress: bool = True, *, n_images: int = 10000, n_queries: int = 1000,
          grids=DEFAULT_GRIDS, k: int = 100, seed: int = 0, n_jobs: int | None = None,
          verify: bool = False) -> dict:
    """Build the dataset into ``out_dir`` (default :func:`default_dir`) and return its manifest.

    A complete build with the same recipe is reused after checking that its files exist with the
    recorded sizes (and sha256 too when ``verify``). ``n_images`` (the first rows of CIFAR-10),
    ``n_queries``, ``grids`` and ``k`` shrink the recipe for tests; ``n_jobs`` threads (default: every
    core) extract the descriptors.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_dir()
    n_images = check_int(n_images, "n_images", low=2, high=N_CIFAR)
    n_queries = check_int(n_queries, "n_queries", low=1, high=n_images - 1)
    grids = _check_grids(grids)
    seed = check_int(seed, "seed", low=0)
    n_jobs = check_int(n_jobs if n_jobs is not None else (os.cpu_count() or 1), "n_jobs", low=1)
    n_kp = sum(n * n for n, _ in grids)
    n_base = (n_images - n_queries) * n_kp
    k = check_int(k, "k", low=1, high=n_base)
    recipe = _recipe(n_images, n_queries, grids, k, seed)

    with _lock(out_dir):
        manifest = _read_manifest(out_dir)
        problem = _manifest_problem(manifest, out_dir, recipe, verify)
        if problem is None:
            log.info("%s: complete build found in %s", NAME, out_dir)
            return manifest
        if manifest is not None:
            log.info("%s: rebuilding in %s (%s)", NAME, out_dir, problem)
        t0 = time.perf_counter()
        images, _ = load_cifar10()
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
        parts = out_dir / f".parts-{key}"
        parts.mkdir(parents=True, exist_ok=True)
        desc = _extract_all(images[:n_images], grids, parts, n_jobs, progress)
        t_extract = time.perf_counter() - t0

        query_images, query_kp = _split(n_images, n_queries, n_kp, seed)
        is_query = np.zeros(n_images, dtype=bool)
        is_query[query_images] = True
        base_images = np.flatnonzero(~is_query)
        base = desc[base_images].reshape(-1, DIM)
        queries = np.ascontiguousarray(desc[query_images, query_kp])
        del desc
        log.info("%s: exact top-%d ground truth of %d queries over %d vectors", NAME, k, n_queries, base.shape[0])
        t1 = time.perf_counter()
        _, gt = exact_knn(base, queries, k)
        t_gt = time.perf_counter() - t1

        write_bvecs(out_dir / "base.bvecs", base)
        write_bvecs(out_dir / "queries.bvecs", queries)
        write_ivecs(out_dir / "groundtruth.ivecs", gt.astype(np.int32))
        files = {}
        for name, arr in zip(_FILES, (base, queries, gt)):
            path = out_dir / name
            files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path), "shape": list(arr.shape)}
        manifest = {
            "name": NAME, "format_version": FORMAT_VERSION, "recipe": recipe,
            "n_base": int(base.shape[0]), "n_queries": n_queries, "dim": DIM, "k": k,
            "n_base_images": int(base_images.size),
            "query_images": query_images.tolist(), "query_keypoints": query_kp.tolist(),
            "zero_base_vectors": int((base.max(axis=1) == 0).sum()),
            "files": files,
            "seconds": {"extract": round(t_extract, 1), "groundtruth": round(t_gt, 1)},
        }
        atomic_write_bytes(out_dir / "manifest.json", [json.dumps(manifest, indent=1, sort_keys=True).encode()])
        shutil.rmtree(parts, ignore_errors=True)
        log.info("%s: built %d base vectors in %.0f s (extraction %.0f s)", NAME, base.shape[0],
                 time.perf_counter() - t0, t_extract)
        return manifest


def load_sift_cifar(out_dir: Path | None = None, progress: bool = False, **recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SIFT1M-CIFAR, built first if missing: ``(base uint8 (N, 128), queries uint8 (1000, 128), gt int32 (1000, 100))``.

    ``base`` is a read-only memory map. ``recipe`` takes the keyword arguments of :func:`build`.
    """
    out_dir = Path(out_dir) if out_dir is not None else default_dir()
    manifest = build(out_dir, progress=progress, **recipe)
    base = read_bvecs(out_dir / "base.bvecs")
    queries = np.asarray(read_bvecs(out_dir / "queries.bvecs", mmap=False))
    gt = np.asarray(read_ivecs(out_dir / "groundtruth.ivecs", mmap=False))
    want = {"base.bvecs": base.shape, "queries.bvecs": queries.shape, "groundtruth.ivecs": gt.shape}
    for name, shape in want.items():
        if list(shape) != manifest["files"][name]["shape"]:
            raise FormatError(f"{out_dir / name} has shape {shape}, the manifest says {manifest['files'][name]['shape']}")
    return base, queries, gt
