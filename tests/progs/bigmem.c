/* bigmem [MIB]: hold 1 GiB (or MIB MiB) of anonymous memory filled with an
 * offset-dependent pattern.
 *
 * Prints "ready", then a tick number every 50 ms. On SIGUSR1 (handled with a real
 * handler, on an alternate signal stack) the main loop checks every byte and prints
 * "verify ok BYTES" or "verify BAD at OFFSET".
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static uint64_t size = 1ul << 30;

static volatile sig_atomic_t want_verify;

static void on_usr1(int sig) { (void)sig; want_verify = 1; }

static uint64_t pattern(uint64_t off) { return (off * 0x9E3779B97F4A7C15ull) ^ (off >> 13) ^ 0xA5A5; }

int main(int argc, char **argv)
{
    if (argc > 1) size = strtoul(argv[1], NULL, 10) << 20;
    uint64_t *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    for (uint64_t i = 0; i < size / 8; i++) mem[i] = pattern(i * 8);

    static char altstack[64 * 1024];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_ONSTACK;
    sigaction(SIGUSR1, &sa, NULL);

    dprintf(1, "ready\n");
    for (long n = 0;; n++) {
        if (want_verify) {
            want_verify = 0;
            uint64_t bad = size;
            for (uint64_t i = 0; i < size / 8; i++)
                if (mem[i] != pattern(i * 8)) { bad = i * 8; break; }
            if (bad == size) dprintf(1, "verify ok %lu\n", (unsigned long)size);
            else dprintf(1, "verify BAD at %lu\n", (unsigned long)bad);
        }
        dprintf(1, "%ld\n", n);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
