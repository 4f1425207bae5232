"""A sqlite database in WAL mode (its -wal file written, its -shm index mapped shared)
with a writer and a reader process (its child) on it. The writer adds one row per
transaction, each row holding the sum of all before it; it prints "wrote N" every
50 rows. The reader checks the whole table in a read transaction each time and prints
"read N" when it saw N rows, all consistent; "ERROR ..." and exit 1 on anything
wrong. Usage: sqlite_wal.py DB"""

import os
import sqlite3
import sys
import time

path = sys.argv[1]
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=200")
db.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY, total INTEGER)")


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


if os.fork() == 0:
    db = sqlite3.connect(path, isolation_level=None)
    seen = 0
    while True:
        db.execute("BEGIN")
        rows = db.execute("SELECT n, total FROM t ORDER BY n").fetchall()
        db.execute("COMMIT")
        total = 0
        for i, (n, t) in enumerate(rows):
            if n != i or t != total:
                say(f"ERROR row {i}: {n} {t}, expected {i} {total}")
                os._exit(1)
            total += n
        if len(rows) < seen:
            say(f"ERROR {len(rows)} rows after {seen}")
            os._exit(1)
        if len(rows) // 50 > seen // 50:
            say(f"read {len(rows)}")
        seen = len(rows)
        time.sleep(0.05)

n = db.execute("SELECT count(*) FROM t").fetchone()[0]
total = db.execute("SELECT coalesce(sum(n), 0) FROM t").fetchone()[0]
while True:
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO t VALUES (?, ?)", (n, total))
    db.execute("COMMIT")
    total += n
    n += 1
    if n % 50 == 0:
        say(f"wrote {n}")
    time.sleep(0.005)
