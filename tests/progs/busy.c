/* busy: spin without syscalls; every 2^24 iterations print a tick number.
 *
 * The loop keeps an integer and a double (in an SSE register) that must stay in step;
 * "BAD ..." is printed if they do not (registers or FPU state were lost).
 */
#include <stdint.h>
#include <stdio.h>

int main(void)
{
    uint64_t n = 0;
    double x = 0.0;
    long tick = 0;
    for (;;) {
        n++;
        x += 0.5;
        __asm__ volatile("" : "+r"(n), "+x"(x));
        if ((n & ((1u << 24) - 1)) == 0) {
            if (x != (double)n * 0.5) dprintf(1, "BAD n=%lu x=%f\n", (unsigned long)n, x);
            dprintf(1, "%ld\n", tick++);
        }
    }
}
