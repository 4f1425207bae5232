"""Files passed in unix socket messages not read yet (SCM_RIGHTS), some held by no
process any more. Prints "ready"; on SIGUSR1 reads every queue and prints what it
finds, one "GOT ..." line each, then "END".

- a stream pair: "hello" (plain), then "pipe" carrying the read end of a pipe with
  "pipe-data" buffered (the process closed its own read end; it keeps the write
  end), then "file" carrying a file open at offset 3 (the process closed it), then
  "tail" (plain);
- a seqpacket pair: a message "self" carrying the receiving socket itself;
- a bound datagram socket: a datagram from an unbound socket carrying an eventfd
  whose counter is 7 (closed by the process).
"""

import array
import os
import signal
import socket
import sys
import time

folder = sys.argv[1]
RIGHTS = (socket.SOL_SOCKET, socket.SCM_RIGHTS)


def with_fds(*fds):
    return [(*RIGHTS, array.array("i", fds))]


def fds_of(anc):
    out = []
    for level, ctype, data in anc:
        if (level, ctype) == RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % 4])
            out += list(a)
    return out


sa, sb = socket.socketpair()
r, w = os.pipe()
os.write(w, b"pipe-data")
path = os.path.join(folder, "passed.txt")
with open(path, "w") as f:
    f.write("0123456789")
ffd = os.open(path, os.O_RDONLY)
os.lseek(ffd, 3, os.SEEK_SET)
sb.send(b"hello")
sb.sendmsg([b"pipe"], with_fds(r))
sb.sendmsg([b"file"], with_fds(ffd))
sb.send(b"tail")
os.close(r)
os.close(ffd)

qa, qb = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
qb.sendmsg([b"self"], with_fds(qa.fileno()))

dg = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
dg.bind(b"\0ckpt-test-scm-%d" % os.getpid())
efd = os.eventfd(7)
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as anon:
    anon.sendmsg([b"event"], with_fds(efd), 0, b"\0ckpt-test-scm-%d" % os.getpid())
os.close(efd)


def report(*_):
    # the stream: each read ends with the chunk that carries files
    for _ in range(4):
        data, anc, _, _ = sa.recvmsg(100, 256, socket.MSG_DONTWAIT)
        fds = fds_of(anc)
        print(f"GOT stream {data.decode()} files {len(fds)}", flush=True)
        for fd in fds:
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("pipe:"):
                first = os.read(fd, 100).decode()
                os.write(w, b"more")
                print(f"GOT pipe {first} then {os.read(fd, 100).decode()}", flush=True)
            else:
                print(f"GOT file {os.path.basename(link)} {os.read(fd, 100).decode()}",
                      flush=True)
            os.close(fd)
        if data == b"tail":
            break
    data, anc, _, _ = qa.recvmsg(100, 256)
    (fd,) = fds_of(anc)
    same = os.fstat(fd).st_ino == os.fstat(qa.fileno()).st_ino
    qb.send(b"ping")
    with socket.socket(fileno=fd) as got:
        print(f"GOT seqpacket {data.decode()} same {same} reads {got.recv(10).decode()}",
              flush=True)
    data, anc, _, addr = dg.recvmsg(100, 256)
    (fd,) = fds_of(anc)
    print(f"GOT dgram {data.decode()} eventfd {os.eventfd_read(fd)}", flush=True)
    print("END", flush=True)


signal.signal(signal.SIGUSR1, report)
print("ready", flush=True)
while True:
    time.sleep(0.05)
