/* inotify_watch: one inotify fd with the watches given as arguments, printing
 * every event it reads.
 *
 * Usage: inotify_watch [~]MASK:PATH ...
 *   Each argument adds a watch on PATH with MASK (hex, as inotify_add_watch takes
 *   it, e.g. 300 for IN_CREATE|IN_DELETE, 80000002 for IN_ONESHOT|IN_MODIFY), in
 *   order. Arguments starting with "~" are removed (inotify_rm_watch) once all are
 *   added: "300:/d ~2:/ 2:/f" gives wds 1 and 3, with 2 unused.
 *
 * Prints "fd N", then "wd WD PATH" for each watch, "removed WD" for each removed
 * one, "ready", then for each event read (blocking reads):
 *   "event wd=WD mask=HEX name=NAME"   (NAME empty for events on the watched file)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int fd = inotify_init1(0);
    if (fd < 0) {
        perror("inotify_init1");
        return 1;
    }
    dprintf(1, "fd %d\n", fd);
    int *wds = calloc(argc, sizeof(int));
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i] + (argv[i][0] == '~');
        char *end;
        unsigned long mask = strtoul(arg, &end, 16);
        if (*end != ':') {
            fprintf(stderr, "inotify_watch: bad argument %s\n", argv[i]);
            return 2;
        }
        wds[i] = inotify_add_watch(fd, end + 1, (uint32_t)mask);
        if (wds[i] < 0) {
            perror(end + 1);
            return 3;
        }
        dprintf(1, "wd %d %s\n", wds[i], end + 1);
    }
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] != '~')
            continue;
        if (inotify_rm_watch(fd, wds[i]) < 0) {
            perror("inotify_rm_watch");
            return 3;
        }
        dprintf(1, "removed %d\n", wds[i]);
    }
    dprintf(1, "ready\n");
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) {
            perror("read");
            return 4;
        }
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            dprintf(1, "event wd=%d mask=%x name=%s\n", ev->wd, ev->mask,
                    ev->len ? ev->name : "");
            p += sizeof(*ev) + ev->len;
        }
    }
}
