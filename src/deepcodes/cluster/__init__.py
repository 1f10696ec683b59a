"""Past one machine: an index held as durable shards on Ray actors (see ``sharded.py``)."""
from .routing import merge_topk, shard_of
from .sharded import ShardedIndex

__all__ = ["ShardedIndex", "merge_topk", "shard_of"]
