"""The SCP services: requests the peer invokes, answered with a handler's hooks."""
