"""A small WSGI app for gunicorn: each worker counts the requests it answered.

Answers "pid=PID hits=N" (N counts this worker's requests, in its memory).
"""

import os

hits = 0


def application(environ, start_response):  # type: ignore[no-untyped-def]
    global hits
    hits += 1
    body = f"pid={os.getpid()} hits={hits}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
