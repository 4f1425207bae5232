/* sockwatch: a unix socket bound to a path, then an inotify watch on a file.
 *
 * Usage: sockwatch SOCKET FILE
 *   fd 3: a unix stream socket bound to SOCKET, listening;
 *   fd 4: an inotify instance watching FILE (IN_MODIFY).
 * Prints "ready", then 0, 1, 2, ... every 50 ms.
 */
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof(a));
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, argv[1], sizeof(a.sun_path) - 1);
    if (s != 3 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(s, 4) < 0)
        return 3;
    int in = inotify_init1(0);
    if (in != 4 || inotify_add_watch(in, argv[2], IN_MODIFY) < 0)
        return 4;
    dprintf(1, "ready\n");
    for (long n = 0;; n++) {
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
