"""An index held as shards on Ray actors: ids routed by hash, searches fanned out and merged exactly.

A sharded index is a folder::

    sharded.json        n_shards, the routing hash, d and spec
    shard-000/ ...      one durable index per shard (snapshots + write-ahead log, see service/durable.py)
    router/             the router's own write-ahead log of batches (see below)

Each shard is a :class:`~deepcodes.service.durable.DurableIndex` inside a Ray actor: a change is in
the shard's fsynced log before the actor answers, so an actor that is killed is restarted by Ray
(``max_restarts``) from its folder with every change it acknowledged. A call that was in flight
when it died is sent again once the actor is back; changes carry the router's batch number, so a
resend of a change the shard had already logged is a no-op. If the actor does not come back, the
call raises :class:`~deepcodes.errors.UnavailableError`: never a partial answer.

A batch that touches several shards is first written to the router's log; if the router dies
half-way, the next :meth:`ShardedIndex.open` sends the logged batches again, so a batch ends up on
all of its shards. Searches and changes go through a readers-writer lock: a search never sees a
batch on some shards but not others.

The shards hold trained copies of one index (the same coder and coarse quantizer), so the union of
the shards' top-k lists, merged by (distance, id), is exactly what the single index returns.

Pointing it at a real cluster: every node needs deepcodes installed, and the folder must be at the
same path on every node that may run a shard (a shared file system), because a restarted actor
may come back on another node.
"""
from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from .. import persist
from ..errors import DeepcodesError, FormatError, InputError, UnavailableError
from ..service.durable import DurableIndex, check_ids, check_vectors
from ..service.rwlock import ReadWriteLock
from ..service.wal import LogRecord, WriteAheadLog
from .routing import merge_topk, shard_of

MANIFEST = "sharded.json"
FORMAT = "deepcodes-sharded"
_COMPACT_EVERY = 256   # batches between truncations of the router's log


class ShardActor:
    """One shard: a durable index in ``shard_dir``, answering the router's calls (run as a Ray actor)."""

    def __init__(self, shard_dir: str, snapshot_every: int, snapshot_interval: float):
        self.store = DurableIndex.open(shard_dir, snapshot_every=snapshot_every,
                                       snapshot_interval=snapshot_interval)

    def info(self) -> dict:
        return {"pid": os.getpid(), "last_seq": self.store.last_seq, "ntotal": self.store.ntotal,
                "notes": list(self.store.notes)}

    def add(self, ids, vectors, seq: int) -> int:
        return self.store.add(ids, vectors, seq=seq)

    def remove(self, ids, seq: int) -> int:
        return self.store.remove(ids, seq=seq)

    def contains(self, ids) -> np.ndarray:
        return self.store.contains(ids)

    def search(self, queries, k: int, params: dict, kind: str = "vectors"):
        """This shard's top-min(k, ntotal) of each query (vectors, or codes with ``kind="codes"``)."""
        store = self.store
        with store.lock.read():
            index = store.index
            k_here = min(k, index.ntotal)
            if k_here == 0:
                n = len(queries)
                return np.empty((n, 0), np.float32), np.empty((n, 0), np.int64)
            if kind == "codes":
                return index.search_codes(queries, k_here, **params)
            return index.search(queries, k_here, **params)

    def query_of(self, ids) -> tuple[str, np.ndarray]:
        """What ``search_by_id`` searches with: the stored codes (binary indexes) or reconstructions."""
        with self.store.lock.read():
            index = self.store.index
            if getattr(index, "distance_kind", None) == "binary":
                return "codes", index.get_codes(ids)
            if getattr(index, "front", None) is not None:
                raise InputError("search by id is not available on a sharded index with a front "
                                 "(its reconstructions live in the front's space): search by vector")
            return "vectors", index.reconstruct(ids)

    def call(self, method: str, *args):
        """The store's read-only ``method`` (item, image, labels_and_keys, describe, stats, sample_ids)."""
        if method not in ("item", "image", "labels_and_keys", "describe", "stats", "sample_ids"):
            raise InputError(f"unknown shard call {method!r}")
        return getattr(self.store, method)(*args)

    def close(self) -> None:
        self.store.close()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _actor_errors():
    import ray.exceptions as rex

    return tuple(e for e in (getattr(rex, "RayActorError", None), getattr(rex, "ActorUnavailableError", None))
                 if e is not None)


class ShardedIndex:
    """An index split into ``n_shards`` durable shards on Ray actors. Open with :meth:`open`.

    Offers the service's store surface (``add``, ``remove``, ``search``, ``search_by_id``,
    ``contains``, ``item``, ``image``, ``labels_and_keys``, ``stats``, ``sample_ids``, ``ntotal``, ``d``)
    with the results of one index holding every item.
    """

    def __init__(self, root: Path, manifest: dict, actors: list, wal: WriteAheadLog, next_seq: int,
                 ntotal: int, notes: list[str], restart_timeout: float):
        self.root = root
        self.n_shards = int(manifest["n_shards"])
        self.d = int(manifest["d"])
        self.spec = manifest.get("spec")
        self.actors = actors
        self.wal = wal
        self.notes = notes
        self.restart_timeout = restart_timeout
        self.lock = ReadWriteLock()
        self._writer = threading.Lock()
        self._next_seq = next_seq
        self._ntotal = ntotal
        self._batches_since_compact = 0
        self._broken: str | None = None

    # ---- building and opening ------------------------------------------------------------------
    @staticmethod
    def split(index, root, n_shards: int, gallery=None) -> Path:
        """Write ``index`` as a sharded index folder ``root`` (no Ray needed): shard i holds the
        items whose id hashes to i, and the ``gallery`` rows of those ids."""
        n_shards = int(n_shards)
        if n_shards < 1:
            raise InputError(f"--shards must be at least 1, got {n_shards}")
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise InputError(f"{root} exists and is not an empty folder")
        if not getattr(index, "is_trained", True):
            raise InputError("the index is not trained: train it before splitting it into shards")
        ids = np.asarray(index.ids, dtype=np.int64)
        owners = shard_of(ids, n_shards)
        blob = persist.dumps(index)
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            for i in range(n_shards):
                part = persist.loads(blob)
                others = ids[owners != i]
                if others.size:
                    part.remove(others)
                sub = None if gallery is None else gallery.subset(lambda g: shard_of(g, n_shards) == i)
                DurableIndex.create(tmp / f"shard-{i:03d}", part, sub)
            manifest = {"format": FORMAT, "format_version": 1, "n_shards": n_shards, "hash": "splitmix64",
                        "d": int(index.d), "spec": getattr(index, "spec", None),
                        "class": type(index).__name__}
            persist.atomic_write_bytes(tmp / MANIFEST, [json.dumps(manifest, indent=2).encode()])
            if root.exists():
                root.rmdir()
            os.replace(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return root

    @classmethod
    def open(cls, root, *, address: str | None = None, max_restarts: int = 3,
             restart_timeout: float = 60.0, snapshot_every: int = 20000,
             snapshot_interval: float = 30.0) -> "ShardedIndex":
        """Start one actor per shard of the folder ``root`` (on the Ray at ``address``, or the one this
        process already joined; ``"local"`` starts one) and finish any batch the router logged."""
        import ray

        root = Path(root).resolve()
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise FormatError(f"{root} is not a sharded index folder (no readable {MANIFEST}: {exc})") from None
        if manifest.get("format") != FORMAT or manifest.get("hash") != "splitmix64":
            raise FormatError(f"{root / MANIFEST} does not describe a deepcodes sharded index")
        if not ray.is_initialized():
            if address in (None, "local"):   # a Ray of this machine only, on the loopback interface
                ray.init(include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
            else:
                ray.init(address=address, log_to_driver=False)
        remote = ray.remote(ShardActor).options(
            max_restarts=max_restarts, max_task_retries=0, max_concurrency=8, num_cpus=0,
            scheduling_strategy="SPREAD",
            # One kernel thread per call, as in `deepcodes serve`: concurrency comes from the calls.
            runtime_env={"env_vars": {"NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "1")}})
        n = int(manifest["n_shards"])
        actors = [remote.remote(str(root / f"shard-{i:03d}"), snapshot_every, snapshot_interval)
                  for i in range(n)]
        try:
            infos = ray.get([a.info.remote() for a in actors])
        except _actor_errors() as exc:
            for a in actors:
                ray.kill(a, no_restart=True)
            raise FormatError(f"{root}: a shard could not be opened: {exc}") from None
        notes = [f"shard {i}: {note}" for i, info in enumerate(infos) for note in info["notes"]]
        wal = WriteAheadLog(root / "router")
        pending = list(wal.open(next_seq=max(info["last_seq"] for info in infos) + 1))
        notes.extend(f"router: {note}" for note in wal.notes)
        last = max([info["last_seq"] for info in infos] + [r.seq for r in pending])
        sharded = cls(root, manifest, actors, wal, last + 1, 0, notes, restart_timeout)
        for record in pending:
            sharded._send(record)
        if pending:
            notes.append(f"router: sent {len(pending)} logged batch(es) again to finish them")
        wal.rotate(last + 1)
        wal.drop_through(last)
        sharded._ntotal = sum(sharded._fan([(i, "info", ()) for i in range(n)])[i]["ntotal"] for i in range(n))
        return sharded

    # ---- calling the actors --------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._broken is not None:
            raise UnavailableError(self._broken)

    def _wait_for(self, i: int) -> None:
        """Return once shard ``i`` answers again. While Ray restarts the actor, calls fail with
        ActorUnavailableError: wait (up to ``restart_timeout``). An actor that is dead for good
        (no restarts left, or killed for good) fails with ActorDiedError: UnavailableError."""
        import ray
        import ray.exceptions as rex

        restarting = getattr(rex, "ActorUnavailableError", ())
        deadline = time.monotonic() + self.restart_timeout
        died = 0
        while True:
            try:
                ray.get(self.actors[i].info.remote(), timeout=max(1.0, deadline - time.monotonic()))
                return
            except restarting:
                pass
            except rex.RayActorError as exc:
                died += 1
                if died >= 3:
                    raise UnavailableError(f"shard {i} is down and was not restarted: {_first_line(exc)}") from None
            except rex.GetTimeoutError:
                pass
            if time.monotonic() >= deadline:
                raise UnavailableError(f"shard {i} is down and did not come back within "
                                       f"{self.restart_timeout:.0f} s") from None
            time.sleep(0.5)

    def _fan(self, calls: list[tuple[int, str, tuple]]) -> dict[int, object]:
        """Run ``(shard, method, args)`` calls in parallel; a call whose actor died is run once more
        after the actor is back; raise UnavailableError if it is not."""
        import ray

        refs = {i: getattr(self.actors[i], method).remote(*args) for i, method, args in calls}
        out = {}
        for i, method, args in calls:
            try:
                out[i] = ray.get(refs[i])
            except _actor_errors():
                self._wait_for(i)
                try:
                    out[i] = ray.get(getattr(self.actors[i], method).remote(*args))
                except _actor_errors() as exc:
                    raise UnavailableError(f"shard {i} failed twice on {method}: {_first_line(exc)}") from None
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, DeepcodesError):   # the shard refused bad input: say it plainly
                    raise cause from None
                raise
        return out

    def _owners(self, ids: np.ndarray) -> dict[int, np.ndarray]:
        owners = shard_of(ids, self.n_shards)
        return {i: np.flatnonzero(owners == i) for i in range(self.n_shards) if (owners == i).any()}

    def _send(self, record: LogRecord) -> None:
        """Apply a logged batch on every shard it touches (idempotent: shards skip a seq they have)."""
        parts = self._owners(record.ids)
        if record.op == "add":
            calls = [(i, "add", (record.ids[rows], record.vectors[rows], record.seq)) for i, rows in parts.items()]
        else:
            calls = [(i, "remove", (record.ids[rows], record.seq)) for i, rows in parts.items()]
        self._fan(calls)

    # ---- the store surface -----------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self._ntotal

    def contains(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros(len(ids), dtype=bool)
        with self.lock.read():
            parts = self._owners(ids)
            answers = self._fan([(i, "contains", (ids[rows],)) for i, rows in parts.items()])
        for i, rows in parts.items():
            out[rows] = answers[i]
        return out

    def _change(self, op: str, ids: np.ndarray, vectors: np.ndarray | None) -> int:
        with self._writer:
            self._check_usable()
            present = self.contains(ids)
            if op == "add" and present.any():
                raise InputError(f"id {ids[np.flatnonzero(present)[0]]} is already stored")
            if op == "remove" and not present.all():
                raise InputError(f"id {ids[np.flatnonzero(~present)[0]]} is not stored")
            record = LogRecord(self._next_seq, op, ids, vectors)
            self.wal.append(record)
            self._next_seq += 1
            with self.lock.write():
                try:
                    self._send(record)
                except UnavailableError as exc:
                    self._broken = (f"a batch could not reach every shard ({exc}); it is logged and will "
                                    f"be completed when the index is opened again")
                    raise UnavailableError(self._broken) from None
                self._ntotal += len(ids) if op == "add" else -len(ids)
            self._batches_since_compact += 1
            if self._batches_since_compact >= _COMPACT_EVERY:
                self.wal.rotate(self._next_seq)
                self.wal.drop_through(self._next_seq - 1)
                self._batches_since_compact = 0
            return record.seq

    def add(self, ids, vectors) -> int:
        """Add ``vectors`` (n, d) under ``ids``; durable on every shard when this returns."""
        ids = check_ids(ids)
        X = check_vectors(vectors, self.d)
        if X.shape[0] != ids.shape[0]:
            raise InputError(f"{ids.shape[0]} ids for {X.shape[0]} vectors")
        return self._change("add", ids, X)

    def remove(self, ids) -> int:
        return self._change("remove", check_ids(ids), None)

    def _search(self, queries, k: int, params: dict, kind: str):
        if k < 1 or k > self._ntotal:
            raise InputError(f"k={k} must be between 1 and the number of stored items ({self._ntotal})")
        parts = self._fan([(i, "search", (queries, k, params, kind)) for i in range(self.n_shards)])
        return merge_topk([parts[i] for i in range(self.n_shards)], k)

    def search(self, Q, k: int, **params):
        """The k nearest stored items of each query over all shards, by (distance, id)."""
        Q = check_vectors(Q, self.d, "query vectors")
        with self.lock.read():
            self._check_usable()
            return self._search(Q, int(k), params, "vectors")

    def warm_up(self) -> None:
        """One search on every shard (compiles or loads the kernels before clients come)."""
        if self._ntotal:
            self.search(np.zeros((1, self.d), np.float32), 1)

    def search_by_id(self, ids, k: int, **params):
        """``search`` with stored items as queries (their codes or reconstructions), as one index does."""
        ids = check_ids(ids)
        with self.lock.read():
            self._check_usable()
            parts = self._owners(ids)
            answers = self._fan([(i, "query_of", (ids[rows],)) for i, rows in parts.items()])
            kind = next(iter(answers.values()))[0]
            first = next(iter(answers.values()))[1]
            queries = np.empty((len(ids),) + first.shape[1:], dtype=first.dtype)
            for i, rows in parts.items():
                queries[rows] = answers[i][1]
            return self._search(queries, int(k), params, kind)

    def _one(self, item_id: int, method: str, *args):
        owner = int(shard_of([item_id], self.n_shards)[0])
        with self.lock.read():
            self._check_usable()
            return self._fan([(owner, "call", (method, *args))])[owner]

    def item(self, item_id: int) -> dict:
        return self._one(item_id, "item", item_id)

    def image(self, item_id: int):
        return self._one(item_id, "image", item_id)

    def labels_and_keys(self, ids) -> dict:
        ids = np.asarray(ids, dtype=np.int64)
        labels, keys = [None] * len(ids), [None] * len(ids)
        real = np.flatnonzero(ids >= 0)
        with self.lock.read():
            parts = self._owners(ids[real])
            answers = self._fan([(i, "call", ("labels_and_keys", ids[real[rows]])) for i, rows in parts.items()])
        for i, rows in parts.items():
            for j, r in enumerate(real[rows]):
                labels[r], keys[r] = answers[i]["labels"][j], answers[i]["keys"][j]
        return {"labels": labels, "keys": keys}

    def sample_ids(self, n: int, seed: int = 0) -> np.ndarray:
        with self.lock.read():
            got = self._fan([(i, "call", ("sample_ids", n, seed + i)) for i in range(self.n_shards)])
        ids = np.concatenate([got[i] for i in range(self.n_shards)])
        if ids.size == 0:
            return ids
        return np.random.default_rng(seed).choice(ids, size=min(n, ids.size), replace=False)

    def describe(self) -> dict:
        with self.lock.read():
            desc = dict(self._fan([(0, "call", ("describe",))])[0])
        desc.update(ntotal=self._ntotal, shards=self.n_shards)
        return desc

    def stats(self) -> dict:
        with self.lock.read():
            per = self._fan([(i, "call", ("stats",)) for i in range(self.n_shards)])
        shards = [per[i] for i in range(self.n_shards)]
        desc = dict(shards[0]["index"], ntotal=self._ntotal)
        galleries = [s["gallery"] for s in shards if s["gallery"] is not None]
        gallery = None
        if galleries:
            gallery = dict(galleries[0], items=sum(g["items"] for g in galleries),
                           labels=any(g["labels"] for g in galleries), keys=any(g["keys"] for g in galleries))
        return {"ntotal": self._ntotal, "index": desc, "shards": self.n_shards, "gallery": gallery,
                "recall": None, "last_seq": self._next_seq - 1, "broken": self._broken,
                "recovery": list(self.notes),
                "shard_stats": [{k: s[k] for k in ("ntotal", "last_seq", "snapshots", "wal_bytes", "recovery")}
                                for s in shards]}

    def close(self) -> None:
        """Snapshot every shard and stop the actors."""
        import ray

        try:
            self._fan([(i, "close", ()) for i in range(self.n_shards)])
        except UnavailableError as exc:   # a dead shard has nothing to snapshot; its log is on disk
            self.notes.append(f"close: {exc}")
        finally:
            for a in self.actors:
                ray.kill(a, no_restart=True)
            self.wal.close()
