/* refused_kinds: a process holding something ckpt refuses to dump, for the refusal
 * tests.
 *
 * Usage: refused_kinds uring|uring-nofd|uffd|uffd-region|hugetlb
 *   uring        io_uring_setup(8) and its three rings mapped; the fd kept
 *   uring-nofd   the same, its fd closed (only the mappings hold the instance)
 *   uffd         a userfaultfd, no range registered
 *   uffd-region  a userfaultfd with an anonymous range registered (missing faults)
 *   hugetlb      a memfd of huge pages (MFD_HUGETLB), not mapped
 * Prints "ready", then "N tick" every 50 ms.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int uring(int keep)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int fd = syscall(SYS_io_uring_setup, 8, &p);
    if (fd < 0) return -1;
    size_t sq = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (mmap(NULL, sq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
             IORING_OFF_SQ_RING) == MAP_FAILED) return -1;
    if (!(p.features & IORING_FEAT_SINGLE_MMAP) &&
        mmap(NULL, cq, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
             IORING_OFF_CQ_RING) == MAP_FAILED) return -1;
    if (mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
             MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES) == MAP_FAILED) return -1;
    if (!keep) close(fd);
    return 0;
}

static int uffd(int region)
{
    int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return -1;
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(fd, UFFDIO_API, &api)) return -1;
    if (!region) return 0;
    void *a = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_register reg = {.range = {(unsigned long)a, 4 * 4096},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (a == MAP_FAILED || ioctl(fd, UFFDIO_REGISTER, &reg)) return -1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    int r = !strcmp(argv[1], "uring") ? uring(1)
          : !strcmp(argv[1], "uring-nofd") ? uring(0)
          : !strcmp(argv[1], "uffd") ? uffd(0)
          : !strcmp(argv[1], "uffd-region") ? uffd(1)
          : !strcmp(argv[1], "hugetlb") ? -(memfd_create("huge", MFD_HUGETLB) < 0) : -2;
    if (r) {
        perror(argv[1]);
        return 3;
    }
    printf("ready\n");
    fflush(stdout);
    for (long n = 0;; n++) {
        printf("%ld tick\n", n);
        fflush(stdout);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
