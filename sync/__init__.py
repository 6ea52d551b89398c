"""Sans-I/O core of yrelay: the y-protocols codec, documents and awareness.

Nothing in this package opens a socket, touches a file, reads a clock or
awaits; the relay feeds it bytes and sends the bytes it returns.
"""
