"""Local agent worker processes: agents with ``worker = k`` run in a child process the engine
owns, fed over a pipe (see `engine.workers.pool` for the engine's side, `engine.workers.host`
for the child's, `engine.workers.frames` for the wire)."""
