-- Queue an outbox operation (see queue_op in the prelude). KEYS: outbox, again-set; ARGV: member, due_ms
return queue_op(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
