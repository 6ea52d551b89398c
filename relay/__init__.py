"""The relay node: ASGI app, rooms and fan-out, command line."""
