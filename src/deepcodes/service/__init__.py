"""The HTTP service: a durable index (write-ahead log + atomic snapshots) behind FastAPI.

``durable.DurableIndex`` keeps an index safe across crashes; ``app.create_app`` serves it (or a
``deepcodes.cluster.ShardedIndex``); ``server.serve`` is what ``deepcodes serve`` runs.
"""
