"""An asyncio program: its event loop waits in epoll, woken through a socketpair
self-pipe (also the signal wakeup fd).

Three things run in one loop:
  - a periodic task printing 0, 1, 2, ... every 50 ms;
  - a streams echo over a unix socketpair between two tasks: the client sends
    "msg N", the server answers "echo msg N", the client prints "echo N ok"
    (or "echo N BAD ...") every 100 ms;
  - SIGUSR1, handled with loop.add_signal_handler, prints "usr1 TICK".
It prints "ready" once everything is set up.
"""

import asyncio
import signal
import socket

tick = 0


async def ticker() -> None:
    global tick
    while True:
        print(tick, flush=True)
        tick += 1
        await asyncio.sleep(0.05)


async def server(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    while True:
        line = await reader.readline()
        if not line:
            return
        writer.write(b"echo " + line)
        await writer.drain()


async def client(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    for n in range(10**9):
        writer.write(b"msg %d\n" % n)
        await writer.drain()
        reply = await reader.readline()
        ok = reply == b"echo msg %d\n" % n
        print(f"echo {n} ok" if ok else f"echo {n} BAD {reply!r}", flush=True)
        await asyncio.sleep(0.1)


async def main() -> None:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"usr1 {tick}", flush=True))
    a, b = socket.socketpair()
    tasks = [asyncio.create_task(c) for c in (ticker(), server(b), client(a))]
    print("ready", flush=True)
    await asyncio.gather(*tasks)


asyncio.run(main())
