"""A client, haproxy and nginx in one tree: starts nginx (a master and 2 workers,
serving FOLDER on loopback port NGINX_PORT) and haproxy (master-worker, 2 threads,
on PROXY_PORT, in front of nginx), both as its children with the configuration files
CONF_DIR holds, then GETs /index.html through haproxy over one kept-alive
connection, and over a new connection every 10th time. Prints "req N" every 10
requests; "ERROR ..." and exit 1 on a wrong answer.
Usage: proxy_chain.py CONF_DIR PROXY_PORT"""

import http.client
import os
import subprocess
import sys
import time

conf, port = sys.argv[1], int(sys.argv[2])
nginx = subprocess.Popen(["nginx", "-c", f"{conf}/nginx.conf", "-e", f"{conf}/error.log"])
proxy = subprocess.Popen(["haproxy", "-W", "-db", "-f", f"{conf}/haproxy.cfg"])
want = open(f"{conf}/www/index.html", "rb").read()


def get(conn: http.client.HTTPConnection) -> bytes:
    conn.request("GET", "/index.html")
    reply = conn.getresponse()
    return reply.read() if reply.status == 200 else b"status %d" % reply.status


for _ in range(600):  # both up, the whole chain answering
    try:
        if get(http.client.HTTPConnection("127.0.0.1", port, timeout=5)) == want:
            break
    except OSError:
        pass
    time.sleep(0.1)
else:
    sys.exit("ERROR the chain never answered")
kept = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
n = 0
while True:
    fresh = n % 10 == 9
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60) if fresh else kept
    try:
        body = get(conn)
    except OSError as e:
        body = f"{e!r}".encode()
    if fresh:
        conn.close()
    if body != want:
        os.write(1, f"ERROR request {n}: {body[:200]!r}\n".encode())
        sys.exit(1)
    n += 1
    if n % 10 == 0:
        os.write(1, f"req {n}\n".encode())
