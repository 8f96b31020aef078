# "ours": conjuringd's own hub configuration as shipped; nothing is added here.
