"""Key names and Lua scripts of row updates to a Redis table version.

Beside the version's row keys (``emb:{NAME:VERSION:T}:ID``, ``service.backends.redis_store``):

- ``emb:{NAME}:updates:VERSION`` -- a hash: ``sequence`` (the last sequence handed out),
  ``applied`` (the highest sequence whose rows are all written: ``TableInfo.update_sequence``)
  and ``id:<update_id>`` -> ``"<sequence>:pending"`` | ``"<sequence>:done"``;
- ``emb:{NAME}:update_ids:VERSION`` -- a list of the last ``REMEMBERED_UPDATE_IDS`` update ids
  (older ones leave the hash as they leave the list);
- ``emb:{NAME}:update_log:VERSION`` -- a stream, one entry per applied update (``sequence``,
  ``ids``: base64 of little-endian int64), trimmed to about ``LOG_ENTRIES``: the readers' poll;
- ``emb:{NAME:VERSION:T}:rowseq`` -- per hash tag, a hash id -> sequence of the row's last
  update, in the rows' own slot: a row is written only by an update at least as new as the
  one that wrote it last, so racing writers end with the higher sequence's row everywhere;
- channel ``emb:{NAME}:updates`` -- one message per applied update, JSON
  ``{"entry": stream id, "version", "sequence", "ids": base64 int64}``.

The first three share the table's hash tag (one slot: one script updates them together);
``UpdateKeys.on_table_slot`` and ``UpdateKeys.row_sequences`` name every key above, which is
what ``push --drop-old`` unlinks with the version's rows (``service.publishing.drop``).
"""

from __future__ import annotations

from dataclasses import dataclass

REMEMBERED_UPDATE_IDS = 10_000
LOG_ENTRIES = 10_000


@dataclass(frozen=True)
class UpdateKeys:
    """The update keys of one table version (``UpdateKeys.of``)."""

    name: str
    version: str
    state: str
    update_ids: str
    log: str
    channel: str

    @classmethod
    def of(cls, name: str, version: str) -> UpdateKeys:
        def key(kind: str) -> str:
            return f"emb:{{{name}}}:{kind}:{version}"

        channel = f"emb:{{{name}}}:updates"
        return cls(name, version, key("updates"), key("update_ids"), key("update_log"), channel)

    @property
    def on_table_slot(self) -> tuple[str, str, str]:
        """The version's update keys in the table's own slot (``{NAME}``): state, ids, log."""
        return (self.state, self.update_ids, self.log)

    def row_sequences(self, tag_prefix: bytes) -> bytes:
        """The row-sequence hash of the tag whose row keys start ``tag_prefix``."""
        return tag_prefix + b"rowseq"


# Both scripts below first check that the version is complete in the table's versions hash
# (same slot): one that ``push --drop-old`` claimed (``deleting``) takes no update, so none
# leaves update keys behind a drop. They then answer {0, 'missing'}.
_VERSION_COMPLETE = """
local record = redis.call('HGET', KEYS[3], ARGV[3])
if not record or cjson.decode(record)['state'] ~= 'complete' then
  return {0, 'missing'}
end
"""

# KEYS: state, update_ids, versions. ARGV: update_id ('' for none), remembered ids, version.
# A known update_id answers its sequence and state; else a new sequence is handed out.
BEGIN = (
    _VERSION_COMPLETE
    + """
local uid = ARGV[1]
if uid ~= '' then
  local held = redis.call('HGET', KEYS[1], 'id:' .. uid)
  if held then
    local seq, state = string.match(held, '^(%d+):(%a+)$')
    return {tonumber(seq), state}
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 'sequence', 1)
if uid ~= '' then
  redis.call('HSET', KEYS[1], 'id:' .. uid, seq .. ':pending')
  redis.call('LPUSH', KEYS[2], uid)
  while redis.call('LLEN', KEYS[2]) > tonumber(ARGV[2]) do
    redis.call('HDEL', KEYS[1], 'id:' .. redis.call('RPOP', KEYS[2]))
  end
end
return {seq, 'new'}
"""
)

# KEYS: the tag's rowseq hash, then the row keys. ARGV: sequence, the ids, then the rows.
# Each row is written (with its sequence) unless a newer update wrote it already.
WRITE_ROWS = """
local seq = tonumber(ARGV[1])
local n = #KEYS - 1
local written = 0
for i = 1, n do
  local held = tonumber(redis.call('HGET', KEYS[1], ARGV[1 + i]) or '0')
  if held <= seq then
    redis.call('SET', KEYS[1 + i], ARGV[1 + n + i])
    redis.call('HSET', KEYS[1], ARGV[1 + i], seq)
    written = written + 1
  end
end
return written
"""

# KEYS: state, log, versions. ARGV: update_id ('' for none), sequence, version, ids (base64),
# channel, log entries kept. Marks the update done, logs it, and tells every subscriber.
COMMIT = (
    _VERSION_COMPLETE
    + """
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], 'id:' .. ARGV[1], ARGV[2] .. ':done')
end
local applied = tonumber(redis.call('HGET', KEYS[1], 'applied') or '0')
if tonumber(ARGV[2]) > applied then
  redis.call('HSET', KEYS[1], 'applied', ARGV[2])
end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'sequence', ARGV[2], 'ids', ARGV[4])
redis.call('PUBLISH', ARGV[5], cjson.encode({entry = entry, version = ARGV[3],
  sequence = tonumber(ARGV[2]), ids = ARGV[4]}))
return {entry, 'done'}
"""
)


def packed_command(*args: bytes) -> bytes:
    """One command in RESP, ready for ``PackedCommands``."""
    parts = [b"*%d\r\n" % len(args)]
    parts += [b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args]
    return b"".join(parts)
