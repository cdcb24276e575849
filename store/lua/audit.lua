-- One audit entry outside a transition (a refusal, a post failure), indexed on its request.
-- KEYS: audit, trail; ARGV: event, request_id, actor, at, detail
return audit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
