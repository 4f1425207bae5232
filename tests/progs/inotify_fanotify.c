/* inotify_fanotify: one fanotify group (FAN_CLASS_NOTIF) with the marks given as
 * arguments, printing the events it reads on files under PREFIX.
 * (Named inotify_* to sit with the inotify tests; it is about fanotify.)
 *
 * Usage: inotify_fanotify PREFIX TYPE:MASK:PATH ...
 *   TYPE is inode, mount, fs (FAN_MARK_FILESYSTEM), ignore (an inode mark's
 *   ignored mask, with FAN_MARK_IGNORED_SURV_MODIFY) or held (an inode mark on a
 *   file the program also holds open, printing "held FD"); MASK is hex.
 *
 * Prints "fd N", "ready", then for each event on a file whose path starts with
 * PREFIX: "event mask=HEX path=PATH" (other events are read and dropped).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: inotify_fanotify PREFIX TYPE:MASK:PATH ...\n");
        return 2;
    }
    const char *prefix = argv[1];
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC, O_RDONLY | O_LARGEFILE);
    if (fd < 0) {
        perror("fanotify_init");
        return 1;
    }
    dprintf(1, "fd %d\n", fd);
    for (int i = 2; i < argc; i++) {
        char *type = argv[i], *c1 = strchr(type, ':'), *end;
        if (!c1) {
            fprintf(stderr, "bad mark %s\n", argv[i]);
            return 2;
        }
        *c1 = 0;
        uint64_t mask = strtoull(c1 + 1, &end, 16);
        if (*end != ':') {
            fprintf(stderr, "bad mark %s\n", argv[i]);
            return 2;
        }
        unsigned flags = FAN_MARK_ADD;
        if (!strcmp(type, "mount"))
            flags |= FAN_MARK_MOUNT;
        else if (!strcmp(type, "fs"))
            flags |= FAN_MARK_FILESYSTEM;
        else if (!strcmp(type, "ignore"))
            flags |= FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY;
        else if (!strcmp(type, "held")) {
            int held = open(end + 1, O_RDWR);
            if (held < 0) {
                perror(end + 1);
                return 3;
            }
            dprintf(1, "held %d\n", held);
        } else if (strcmp(type, "inode")) {
            fprintf(stderr, "bad mark type %s\n", type);
            return 2;
        }
        if (fanotify_mark(fd, flags, mask, AT_FDCWD, end + 1) < 0) {
            perror(end + 1);
            return 3;
        }
    }
    dprintf(1, "ready\n");
    char buf[8192] __attribute__((aligned(8)));
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0) {
            perror("read");
            return 4;
        }
        struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
        for (; FAN_EVENT_OK(ev, n); ev = FAN_EVENT_NEXT(ev, n)) {
            if (ev->fd < 0)
                continue;
            char link[64], path[PATH_MAX];
            snprintf(link, sizeof(link), "/proc/self/fd/%d", ev->fd);
            ssize_t len = readlink(link, path, sizeof(path) - 1);
            close(ev->fd);
            if (len < 0)
                continue;
            path[len] = 0;
            if (!strncmp(path, prefix, strlen(prefix)))
                dprintf(1, "event mask=%llx path=%s\n", (unsigned long long)ev->mask, path);
        }
    }
}
