"""A git fast-import stream of CHUNKS x 300 commits: commit i sets file f(i % 37) to
"file i" 50 times over. Before each chunk after the first it waits for the file
GO_PREFIX<k> (k = 1, 2, ...) to exist, so that a test dumps it between chunks, with
git in the middle of its pack; it says "chunk k" on stderr when chunk k is written.
Usage: git_stream.py CHUNKS GO_PREFIX"""

import os
import sys
import time

out = sys.stdout.buffer
chunks, go = int(sys.argv[1]), sys.argv[2]
for i in range(1, chunks * 300 + 1):
    if i % 300 == 1 and i > 1:
        out.flush()
        os.write(2, f"chunk {i // 300}\n".encode())
        while not os.path.exists(f"{go}{i // 300}"):
            time.sleep(0.01)
    data = (f"file {i}\n" * 50).encode()
    out.write(b"commit refs/heads/main\nmark :%d\ncommitter A <a@example.org> %d +0000\n"
              b"data 10\ncommit %03d\n" % (i, 1700000000 + i, i % 1000))
    if i > 1:
        out.write(b"from :%d\n" % (i - 1))
    out.write(b"M 100644 inline f%d\ndata %d\n%s\n" % (i % 37, len(data), data))
out.flush()
os.write(2, f"chunk {chunks}\n".encode())
