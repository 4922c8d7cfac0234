"""Publishing tables into Redis: the write side of Redis tables (``embedding-service push``).

The read side (``service.backends.redis_store``) serves whichever version is current; this
package writes a version and makes it current, and removes old ones:

- ``push`` -- write a table's rows under a new version, then flip the pointer to it.
  The version is a hash of the rows (``source``), so a push that died half-way and is run
  again writes the same keys again (restartable without harm), and pushing an unchanged
  file is a no-op. Rows are written in chunks, one ``MSET`` per hash tag, pipelined per
  node, several chunks in flight at once; before the flip, one replica of each master is
  waited for (``replicas``).
- ``drop`` -- ``--drop-old``: claim a version (state ``deleting``), unlink its rows, forget it.
- ``states`` -- the states of a version and the Lua scripts that move it between them,
  atomically on the pointer's slot: readers never see a half-written version, and the flip
  refuses a version a drop-old claimed. docs/redis.md ("Versions") says what is guaranteed.

Nothing is imported here, so ``service.cli`` can read ``states``' figures without numpy or
redis-py.
"""
