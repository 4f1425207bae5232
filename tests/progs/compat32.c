/* A 32-bit (i386) program without libc: says "ready", then pauses for ever. Built
 * with -m32 -nostdlib -static; ckpt refuses to dump it (compat mode). */
__attribute__((noreturn)) void _start(void)
{
	static const char msg[] = "ready\n";
	int r;
	__asm__ volatile ("int $0x80" : "=a"(r) : "0"(4), "b"(1), "c"(msg), "d"(6) : "memory");
	for (;;)
		__asm__ volatile ("int $0x80" : "=a"(r) : "0"(29) : "memory");
}
