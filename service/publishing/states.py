"""The states of a version in Redis and the Lua scripts that move it between them.

Every script runs on the ``{NAME}`` slot (the pointer and the versions hash share it), so
each is atomic with respect to the others. The states of a version:
``writing`` -> ``complete`` (the flip) and ``writing|complete`` -> ``deleting`` -> gone
(drop-old). Its last activity is the latest of its timestamps (Redis server time, seconds);
a drop-old keeps every version active within the grace.

Plain strings and figures only: ``service.cli`` imports this module to parse its flags.
"""

from __future__ import annotations

# Versions replaced, written or deleted (heartbeat) less than this long ago are kept by
# --drop-old: requests may still read them, or a push / another drop-old is still at work.
DROP_GRACE_SECONDS = 60
MIN_GRACE_SECONDS = 30

LAST_ACTIVITY = """
local function last_activity(rec)
  local last = 0
  for _, field in ipairs({'started_at', 'heartbeat_at', 'current_since', 'replaced_at'}) do
    local t = tonumber(rec[field])
    if t and t > last then last = t end
  end
  return last
end
"""

# Start a push of a version: 'deleting' (refused), 'complete' (rows there: flip only;
# the heartbeat keeps drop-old off it until the flip) or 'writing' (write the rows).
BEGIN = """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local rec = raw and cjson.decode(raw)
if rec and rec['state'] == 'deleting' then return 'deleting' end
if rec and rec['state'] == 'complete' then
  rec['heartbeat_at'] = now
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
  return 'complete'
end
rec = cjson.decode(ARGV[2])
rec['state'] = 'writing'
rec['started_at'] = now
rec['heartbeat_at'] = now
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 'writing'
"""

# A push's heartbeat: 0 when drop-old has claimed (or removed) the version meanwhile.
PUSH_HEARTBEAT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['state'] == 'deleting' then return 0 end
rec['heartbeat_at'] = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""

# Mark a version complete and make it current, atomically; refused ({'missing'} or
# {'deleting'}) when drop-old has claimed or removed it. Else {'flipped', old or ''}.
FLIP = """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'missing'} end
local rec = cjson.decode(raw)
if rec['state'] == 'deleting' then return {'deleting'} end
rec['state'] = 'complete'
rec['replaced_at'] = nil
rec['current_since'] = now
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(rec))
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
if old and old ~= ARGV[1] then
  local o = redis.call('HGET', KEYS[2], old)
  if o then
    local r = cjson.decode(o)
    r['replaced_at'] = now
    redis.call('HSET', KEYS[2], old, cjson.encode(r))
  end
end
return {'flipped', old or ''}
"""

# Claim a version for deletion (ARGV: version, grace, token), re-checked here, before any
# row is unlinked: not current, and no activity (replace, push heartbeat, or the heartbeat
# of another drop-old deleting it) for the grace. Returns {'marked', record} or {reason}.
MARK_DELETING = (
    LAST_ACTIVITY
    + """
local now = tonumber(redis.call('TIME')[1])
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return {'gone'} end
if redis.call('GET', KEYS[1]) == ARGV[1] then return {'current'} end
local rec = cjson.decode(raw)
if now - last_activity(rec) < tonumber(ARGV[2]) then return {'recent'} end
rec['state'] = 'deleting'
rec['deleter'] = ARGV[3]
rec['heartbeat_at'] = now
raw = cjson.encode(rec)
redis.call('HSET', KEYS[2], ARGV[1], raw)
return {'marked', raw}
"""
)

# A drop-old's heartbeat (ARGV: version, token): 0 when its claim was taken over.
DELETE_HEARTBEAT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['state'] ~= 'deleting' or rec['deleter'] ~= ARGV[2] then return 0 end
rec['heartbeat_at'] = tonumber(redis.call('TIME')[1])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(rec))
return 1
"""

# Forget a deleted version (ARGV: version, token), only while the claim is still ours.
FINISH_DELETE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local rec = cjson.decode(raw)
if rec['state'] ~= 'deleting' or rec['deleter'] ~= ARGV[2] then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""
