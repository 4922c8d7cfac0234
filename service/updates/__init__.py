"""Row updates: the storage layer (file tables and Redis tables), not yet wired into serving.

API.md, "Row updates", is the contract; this package keeps updates durable and readable.

File tables (``.npy``, ONNX; ``layout``, ``delta_files``, ``file_log``, ``overlay``,
``compaction``, ``base_manifest``):

- ``FileUpdateLog.for_weights(weights)`` -- the log of the version ``weights`` were loaded
  as, in ``<table file's folder>/.updates/<file stem>/<version>/`` (hidden: discovery and the
  watcher never take it for a table or a version; keyed by ``TableWeights.version``, so a new
  file starts from its own rows).
- ``log.write(ids, rows, update_id=None) -> WriteResult(sequence, rows, applied)`` -- checked
  (``validation.check_update``: ``InvalidIds``, ``IdOutOfRange``, ``InvalidRequest``,
  ``NotUpdatable`` for int8 tables; nothing written when refused), then durable: one immutable
  file per update, temp + fsync + rename + folder fsync, its sequence in its name, sequences
  handed out under ``fcntl.flock`` (many processes, one order). A repeated ``update_id``
  answers the first sequence (the last 10,000 ids at least, across restarts).
- ``log.overlay(base=FileIdentity) -> UpdateOverlay`` -- per process: ``apply(ids, rows)``
  patches gathered float32 rows in place (one attribute check when nothing was ever
  updated; else one gather in a dense index, or a binary search for tables past
  ``DENSE_MAX_ROWS``), ``refresh()`` reads new
  files and swaps the state in one reference (a response gets all of an update or none),
  returning the ids changed (drop them from caches); ``OverlayStale`` from it means: load
  the table again. Take ``base`` as ``FileIdentity.of(path)`` before mapping the file (and
  map again if it changed meanwhile).
- ``compaction.compact_if_due(log)`` -- in the background: deltas folded into a snapshot
  after ``MAX_DELTA_FILES``; an ``.npy`` base rewritten (aside, renamed in) once the snapshot
  holds ``fold_rows(rows, dim)`` rows. Neither changes an answer, the version or the sequence:
  ``base_manifest.served_version(path, computed)`` keeps the version of a compacted file,
  ``is_compaction_of(path, version)`` tells the watcher it is not a new version.

Redis tables (``redis_keys``, ``redis_writer``, ``redis_feed``):

- ``RedisRowUpdates(client, name).write(ids, rows, update_id=None, version=None)`` -- rows
  written per hash tag by a script (per-row atomic; a multi-row update on a cluster is not one
  transaction), a replica of every master touched waited for, then committed: ``applied``
  sequence, update-id record, log stream entry and pub/sub message.
- ``RedisUpdateFeed(client, url, name, version)`` -- ``start()``, then ``events()`` yields an
  ``UpdateEvent(version, sequence, ids)`` per update (message first, stream poll as the safety
  net; ``ids=None``: drop every cached row); ``applied_sequence()`` is ``update_sequence``.

Offline: ``offline.run_update(table, ids_path, vectors_path, models=DIR | redis_url=URL,
update_id=None, version=None) -> UpdateOutcome`` for ``embedding-service update``.
"""
