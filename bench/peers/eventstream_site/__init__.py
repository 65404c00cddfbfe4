"""django-eventstream 5 as its README sets it up, on PostgreSQL, for bench/sse_peers.py.

`serve.py` runs the ASGI site in uvicorn (one process, as the product's web server) with
a hook on its standard input that calls `send_event` in that same process: without
Redis or a GRIP proxy, django-eventstream delivers only to the clients of the process
that calls it.
"""
