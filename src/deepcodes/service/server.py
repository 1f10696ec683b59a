"""``deepcodes serve``: open (or create) the durable index, build the app, run it on uvicorn."""
from __future__ import annotations

import ipaddress
import signal
import sys
from pathlib import Path

from ..errors import InputError
from .app import Limits, create_app
from .gallery import Gallery


def _say(message: str) -> None:
    print(f"deepcodes serve: {message}", file=sys.stderr, flush=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gallery_from_files(vectors_file, labels_file=None, ids_file=None) -> Gallery:
    """A gallery of the vectors in ``vectors_file`` (any format ``open_vectors`` reads), under the
    ids in ``ids_file`` (default 0..n-1, the ids ``deepcodes build`` gives), with optional labels."""
    import numpy as np

    from ..data import open_vectors, read_ids, read_labels

    with open_vectors(vectors_file) as vectors:
        ids = read_ids(ids_file, vectors.n) if ids_file else np.arange(vectors.n, dtype=np.int64)
        labels = read_labels(labels_file, vectors.n)[0] if labels_file else None
        gallery = Gallery(vectors.d)
        gallery.add(ids, vectors.read(), labels,
                    None if vectors.keys is None else [str(k) for k in vectors.keys])
    return gallery


def open_store(index_path: Path, data_dir: Path | None, *, ray_address: str | None = None,
               gallery: Gallery | None = None, snapshot_every: int = 20000,
               snapshot_interval: float = 30.0):
    """The store ``serve`` answers from: a DurableIndex in ``data_dir``, or a ShardedIndex on Ray."""
    if ray_address is not None:
        from ..cluster import ShardedIndex

        if data_dir is not None and Path(data_dir) != Path(index_path):
            raise InputError("with --ray the sharded index folder is its own data folder: leave out --data-dir")
        if gallery is not None:
            raise InputError("with --ray each shard keeps its own gallery, written when the index is split "
                             "(ShardedIndex.split(..., gallery=...)): leave out --gallery")
        return ShardedIndex.open(index_path, address=ray_address, snapshot_every=snapshot_every,
                                 snapshot_interval=snapshot_interval)
    from .. import load
    from .durable import DurableIndex, snapshot_folders

    data_dir = Path(data_dir) if data_dir is not None else Path(f"{index_path}.service")
    initial = None
    if not snapshot_folders(data_dir):
        initial = load(index_path)
        _say(f"new data folder {data_dir}: first snapshot from {index_path}")
    elif gallery is not None:
        _say(f"{data_dir} already holds the items and their gallery; --gallery is ignored")
        gallery = None
    return DurableIndex.open(data_dir, initial, gallery if initial is not None else None,
                             snapshot_every=snapshot_every, snapshot_interval=snapshot_interval)


def serve(index_path, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          data_dir=None, ray_address: str | None = None, gallery: Gallery | None = None,
          limits: Limits = Limits(), snapshot_every: int = 20000, snapshot_interval: float = 30.0) -> None:
    """Serve the index until SIGINT/SIGTERM; then write a last snapshot and stop."""
    import threading

    import uvicorn

    if not is_loopback(host) and not token:
        _say(f"warning: listening on {host} without --token: anyone who can reach it can change the index")
    store = open_store(Path(index_path), data_dir, ray_address=ray_address, gallery=gallery,
                       snapshot_every=snapshot_every, snapshot_interval=snapshot_interval)
    for note in getattr(store, "notes", []):
        _say(note)
    if hasattr(store, "measure_recall"):
        threading.Thread(target=store.measure_recall, name="deepcodes-recall", daemon=True).start()
    store.warm_up()
    app = create_app(store, token=token, limits=limits)
    desc = store.describe()
    _say(f"{desc.get('spec') or desc.get('class')} with {store.ntotal} items on http://{host}:{port} "
         f"(page at /, API docs at /docs)")
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again with the handler
    # that was there before it: make SIGTERM's an exit that unwinds (as SIGINT's KeyboardInterrupt
    # does), so that the last snapshot below is written.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass
    finally:
        store.close()
        _say("stopped (last snapshot written)")
