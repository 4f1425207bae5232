/* Memory: anonymous and file mappings of every kind, protections, madvise flags,
 * growing stacks, high addresses, many areas, the heap, copy-on-write and shared
 * memory between processes, memfd. */
#include "zdtm.h"
#include <setjmp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#define PG 4096

static void *map(void *at, size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(at, len, prot, flags, fd, off);
	if (p == MAP_FAILED)
		zt_setup_fail("mmap %zu", len);
	return p;
}

/* The "VmFlags:" of the smaps entry starting at ADDR ("" when none). */
static void vmflags(void *addr, char *out, size_t size)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	unsigned long start = 0, want = (unsigned long)addr;
	int in = 0;
	out[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			start = s;
			in = start == want;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			strncpy(out, line + 8, size - 1);
			out[size - 1] = 0;
			break;
		}
	}
	if (f)
		fclose(f);
}

/* The permissions and the backing of the mapping at ADDR, from /proc/self/maps. */
static void map_line(void *addr, char *out, size_t size)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[1024];
	out[0] = 0;
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s == (unsigned long)addr) {
			char *p = strchr(line, ' ');
			/* perms, offset, and the path (not dev/inode: a ghost has another) */
			char perms[8] = "", path[512] = "";
			unsigned long off;
			sscanf(p, " %7s %lx %*s %*s %511[^\n]", perms, &off, path);
			snprintf(out, size, "%lx-%lx %s %lx %s", s, e, perms, off, path);
			break;
		}
	}
	if (f)
		fclose(f);
}

/* Mappings of every kind with data in them; after the restore the same layout and
 * the same bytes, shared file mappings still writing to the file. */
static int mappings(void)
{
	struct m { void *p; size_t len; unsigned seed; char line[700]; } m[8];
	int fd = zt_make_file("data.file", 16 * PG, 50);
	m[0].p = map(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m[1].p = map(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	m[2].p = map(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	m[3].p = map(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 8 * PG);
	m[4].p = map(NULL, 4 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m[5].p = map(NULL, 4 * PG, PROT_READ, MAP_PRIVATE, fd, 4 * PG);
	m[6].p = map(NULL, 4 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	m[7].p = map(NULL, 4 * PG, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t lens[8] = { 8 * PG, 8 * PG, 8 * PG, 4 * PG, 4 * PG, 4 * PG, 4 * PG, 4 * PG };
	for (int i = 0; i < 8; i++) {
		m[i].len = lens[i];
		m[i].seed = 10 + i;
	}
	zt_fill(m[0].p, m[0].len, m[0].seed);
	zt_fill(m[1].p, m[1].len, m[1].seed);
	zt_fill((char *)m[2].p + 3 * PG, PG, 99); /* one page copied on write */
	zt_fill(m[3].p, m[3].len, m[3].seed); /* through to the file */
	for (int i = 0; i < 8; i++)
		map_line(m[i].p, m[i].line, sizeof(m[i].line));
	zt_ready();
	zt_wait();
	for (int i = 0; i < 8; i++) {
		char now[700];
		map_line(m[i].p, now, sizeof(now));
		CHECK(!strcmp(now, m[i].line), "mapping %d: %s, was %s", i, now, m[i].line);
	}
	long d;
	CHECK((d = zt_diff(m[0].p, m[0].len, m[0].seed)) < 0, "private anon differs at %ld", d);
	CHECK((d = zt_diff(m[1].p, m[1].len, m[1].seed)) < 0, "shared anon differs at %ld", d);
	CHECK((d = zt_diff((char *)m[2].p + 3 * PG, PG, 99)) < 0, "COW page of a file differs at %ld", d);
	CHECK((d = zt_diff(m[2].p, 3 * PG, 50)) < 0, "file pages of a private mapping differ at %ld", d);
	CHECK((d = zt_diff(m[3].p, m[3].len, m[3].seed)) < 0, "shared file mapping differs at %ld", d);
	char file_part[4 * PG];
	SYS(pread(fd, file_part, 4 * PG, 4 * PG));
	CHECK(!memcmp(m[5].p, file_part, 4 * PG), "read-only file mapping differs from the file");
	/* the shared file mapping still writes to the file */
	((char *)m[3].p)[5] = 'Z';
	char c;
	SYS(pread(fd, &c, 1, 8 * PG + 5));
	CHECK(c == 'Z', "shared mapping no longer writes to the file");
	for (int i = 0; i < 8; i++)
		if (i != 4 && i != 5 && i != 6 && i != 7)
			((volatile char *)m[i].p)[0] ^= 1; /* still writable */
	zt_pass();
}

static sigjmp_buf jb;
static volatile int faults;
static void on_segv(int s) { (void)s; faults++; siglongjmp(jb, 1); }

static int try_write(volatile char *p)
{
	if (sigsetjmp(jb, 1))
		return 0;
	*p = 1;
	return 1;
}

static int try_read(volatile char *p)
{
	if (sigsetjmp(jb, 1))
		return 0;
	(void)*p;
	return 1;
}

/* mprotect'ed pieces of one mapping: each keeps its protection. */
static int mprotect_check(void)
{
	char *p = map(NULL, 6 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	zt_fill(p, 6 * PG, 3);
	SYS(mprotect(p + PG, PG, PROT_READ));
	SYS(mprotect(p + 2 * PG, PG, PROT_NONE));
	SYS(mprotect(p + 4 * PG, PG, PROT_READ | PROT_EXEC));
	signal(SIGSEGV, on_segv);
	zt_ready();
	zt_wait();
	CHECK(!try_read(p + 2 * PG), "PROT_NONE page readable");
	SYS(mprotect(p + 2 * PG, PG, PROT_READ));
	CHECK(zt_diff(p, 6 * PG, 3) < 0, "data under the protections changed");
	CHECK(try_write(p) && try_write(p + 3 * PG) && try_write(p + 5 * PG), "writable page refused");
	CHECK(!try_write(p + PG) && try_read(p + PG), "read-only page");
	CHECK(!try_write(p + 4 * PG) && try_read(p + 4 * PG), "read-exec page");
	zt_pass();
}

/* madvise flags shown in VmFlags. */
static int madvise_flags(int access)
{
	int kinds[] = { MADV_DONTFORK, MADV_DONTDUMP, MADV_HUGEPAGE, MADV_NOHUGEPAGE,
			MADV_WIPEONFORK }, patterns[] = { MADV_SEQUENTIAL, MADV_RANDOM };
	int *advice = access ? patterns : kinds;
	int n = access ? 2 : 5;
	char *p[8], before[8][256];
	for (int i = 0; i < n; i++) {
		p[i] = map(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		SYS(mprotect(p[i] + 4 * PG, PG, PROT_NONE)); /* keeps them apart */
		SYS(madvise(p[i], 4 * PG, advice[i]));
		zt_fill(p[i], 4 * PG, i);
		vmflags(p[i], before[i], sizeof(before[i]));
	}
	zt_ready();
	zt_wait();
	for (int i = 0; i < n; i++) {
		char now[256];
		vmflags(p[i], now, sizeof(now));
		CHECK(!strcmp(now, before[i]), "madvise %d: VmFlags%s, were%s", advice[i], now, before[i]);
		CHECK(zt_diff(p[i], 4 * PG, i) < 0, "data of mapping %d", i);
	}
	zt_pass();
}

static int mlocked(void)
{
	char *p = map(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	SYS(mlock(p, 4 * PG));
	zt_fill(p, 4 * PG, 9);
	char before[256], now[256];
	vmflags(p, before, sizeof(before));
	zt_ready();
	zt_wait();
	vmflags(p, now, sizeof(now));
	CHECK(!strcmp(now, before), "VmFlags%s, were%s", now, before);
	CHECK(zt_diff(p, 4 * PG, 9) < 0, "data");
	zt_pass();
}

/* Areas mapped without swap reserved (MAP_NORESERVE): a sparse 64 GiB one, larger
 * than memory and swap (as sanitizers' shadow memory), and an address-space
 * reservation (PROT_NONE, as a runtime's heap reserve). */
static int noreserve(void)
{
	size_t big = 64UL << 30;
	char *p = map(NULL, big, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *r = map(NULL, 256 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		      -1, 0);
	zt_fill(p, PG, 3);
	zt_fill(p + big - PG, PG, 4);
	char before[256], now[256], rbefore[256], rnow[256];
	vmflags(p, before, sizeof(before));
	vmflags(r, rbefore, sizeof(rbefore));
	zt_ready();
	zt_wait();
	vmflags(p, now, sizeof(now));
	vmflags(r, rnow, sizeof(rnow));
	CHECK(strstr(before, " nr") && !strcmp(now, before), "VmFlags%s, were%s", now, before);
	CHECK(!strcmp(rnow, rbefore), "reservation's VmFlags%s, were%s", rnow, rbefore);
	CHECK(zt_diff(p, PG, 3) < 0 && zt_diff(p + big - PG, PG, 4) < 0, "data");
	/* the reservation is committed a piece at a time, as a runtime grows its heap */
	SYS(mprotect(r, 16 * PG, PROT_READ | PROT_WRITE));
	zt_fill(r, 16 * PG, 5);
	CHECK(zt_diff(r, 16 * PG, 5) < 0, "reservation's data");
	zt_pass();
}

/* Memory of memfd_secret (no other process can read it): refused by design; the
 * process runs on with its secret intact. */
static int secretmem(void)
{
	int fd = syscall(SYS_memfd_secret, 0);
	if (fd < 0)
		zt_setup_fail("memfd_secret");
	SYS(ftruncate(fd, 2 * PG));
	char *p = map(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	zt_fill(p, 2 * PG, 11);
	zt_ready();
	zt_wait();
	CHECK(zt_diff(p, 2 * PG, 11) < 0, "secret memory changed");
	zt_pass();
}

static int all_zero(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

/* Whether every page of PAGES (those with GUARDED[i]) still faults on a write, in this
 * process and in a child forked now (there a guard of a wipe-on-fork page is gone). */
static int guards_hold(char *base, const int *guarded, const int *wipe, int pages, int child)
{
	for (int i = 0; i < pages; i++) {
		if (!guarded[i] || (child && wipe[i]))
			continue;
		if (try_write(base + i * PG))
			return 0;
	}
	return 1;
}

/* Guard pages (MADV_GUARD_INSTALL) scattered over five mappings of two pages, one of
 * them wipe-on-fork too; the pages between keep their data. */
static int guard_pages(void)
{
	enum { PAGES = 10 };
	int guarded[PAGES] = { 0, 1, 1, 0, 0, 1, 1, 0, 0, 0 };
	int wipe[PAGES] = { 0, 0, 0, 0, 0, 1, 0, 0, 0, 0 };
	char *base = map(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			 -1, 0);
	for (int i = 0; i < PAGES; i += 2) /* five mappings side by side */
		map(base + i * PG, 2 * PG, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	for (int i = 0; i < PAGES; i++) {
		if (!guarded[i])
			zt_fill(base + i * PG, PG, 20 + i);
		if (guarded[i] && madvise(base + i * PG, PG, 102 /* MADV_GUARD_INSTALL */))
			zt_setup_fail("MADV_GUARD_INSTALL");
		if (wipe[i])
			SYS(madvise(base + i * PG, PG, MADV_WIPEONFORK));
	}
	signal(SIGSEGV, on_segv);
	CHECK(guards_hold(base, guarded, wipe, PAGES, 0), "set-up: guards do not hold");
	zt_ready();
	zt_wait();
	CHECK(guards_hold(base, guarded, wipe, PAGES, 0), "a guard page was lost");
	pid_t c = SYS(fork());
	if (c == 0)
		_exit(guards_hold(base, guarded, wipe, PAGES, 1) ? 0 : 1);
	CHECK(zt_reap(c) == 0, "a child forked after the restore lost a guard page");
	for (int i = 0; i < PAGES; i++)
		CHECK(guarded[i] || zt_diff(base + i * PG, PG, 20 + i) < 0, "page %d's data", i);
	zt_pass();
}

/* MAP_DROPPABLE (the kernel may drop its pages: zero) and MADV_WIPEONFORK memory, with
 * a child forked before the dump: after the restore a fork still gives a child zeros in
 * both, and the wipe-on-fork memory keeps its data. */
static int droppable(void)
{
	const char data[] = "droppable or wiped on fork";
	char *d = mmap(NULL, PG, PROT_READ | PROT_WRITE, 0x08 /* MAP_DROPPABLE */ | MAP_ANONYMOUS,
		       -1, 0);
	if (d == MAP_FAILED)
		zt_setup_fail("MAP_DROPPABLE");
	char *w = map(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	SYS(madvise(w, PG, MADV_WIPEONFORK));
	memcpy(d, data, sizeof(data));
	memcpy(w, data, sizeof(data));
	pid_t early = SYS(fork());
	if (early == 0) {
		zt_wait();
		_exit(all_zero(d, PG) && all_zero(w, PG) ? 0 : 1);
	}
	zt_ready();
	zt_wait();
	zt_children_verdict(&early, 1);
	CHECK(!memcmp(w, data, sizeof(data)), "wipe-on-fork memory lost its data");
	CHECK(!memcmp(d, data, sizeof(data)) || all_zero(d, PG), "droppable memory is neither "
	      "its data nor dropped");
	memcpy(d, data, sizeof(data));
	pid_t late = SYS(fork());
	if (late == 0)
		_exit(all_zero(d, PG) && all_zero(w, PG) ? 0 : 1);
	CHECK(zt_reap(late) == 0, "a child forked after the restore got the memory");
	zt_pass();
}

/* mlockall(MCL_FUTURE): what the process maps after the restore is locked too. */
static int mlockall_future(int onfault)
{
	SYS(mlockall(MCL_FUTURE | (onfault ? MCL_ONFAULT : 0)));
	char *old = map(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	old[0] = 1;
	char before[256], now[256];
	vmflags(old, before, sizeof(before));
	zt_ready();
	zt_wait();
	vmflags(old, now, sizeof(now));
	CHECK(!strcmp(now, before), "VmFlags%s, were%s", now, before);
	char *p = map(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	vmflags(p, now, sizeof(now));
	CHECK(strstr(now, " lo") && !strstr(now, " lf") == !onfault,
	      "a new mapping's VmFlags%s: mlockall(MCL_FUTURE%s) lost", now,
	      onfault ? " | MCL_ONFAULT" : "");
	zt_pass();
}

/* A MAP_GROWSDOWN area grows below its start after the restore. */
static int growsdown(void)
{
	char *base = map(NULL, 64 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(base, 64 * PG);
	char *p = map(base + 48 * PG, 4 * PG, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED, -1, 0);
	zt_fill(p, 4 * PG, 4);
	zt_ready();
	zt_wait();
	CHECK(zt_diff(p, 4 * PG, 4) < 0, "data");
	volatile char *below = p - 8 * PG; /* within the stack guard gap rules: grow page by page */
	for (volatile char *q = p - 1; q >= below; q -= PG)
		*q = 7;
	char line[700];
	map_line((void *)(((unsigned long)below) & ~(PG - 1UL)), line, sizeof(line));
	CHECK(line[0], "the area did not grow down");
	zt_pass();
}

/* A mapping at a high address (above 2^46). */
static int high_map(void)
{
	char *want = (char *)(1UL << 46) + 123 * PG;
	char *p = mmap(want, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != want)
		zt_setup_fail("high mmap");
	zt_fill(p, 2 * PG, 8);
	zt_ready();
	zt_wait();
	CHECK(zt_diff(p, 2 * PG, 8) < 0, "data at a high address");
	zt_pass();
}

/* Two thousand small areas of alternating protections. */
static int many_maps(void)
{
	int n = 2000;
	char *p = map(NULL, (size_t)n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < n; i++)
		p[(size_t)i * PG] = (char)i;
	for (int i = 0; i < n; i += 2)
		SYS(mprotect(p + (size_t)i * PG, PG, PROT_READ));
	zt_ready();
	zt_wait();
	for (int i = 0; i < n; i++)
		CHECK(p[(size_t)i * PG] == (char)i, "area %d", i);
	signal(SIGSEGV, on_segv);
	CHECK(!try_write(p) && try_write(p + PG), "protections");
	zt_pass();
}

/* A file mapping longer than the file: the part past the end faults with SIGBUS. */
static int past_eof(void)
{
	int fd = zt_make_file("short.file", PG + 100, 77);
	char *p = map(NULL, 4 * PG, PROT_READ, MAP_SHARED, fd, 0);
	zt_ready();
	zt_wait();
	CHECK(zt_diff(p, PG + 100, 77) < 0, "file data");
	signal(SIGBUS, on_segv);
	CHECK(!try_read(p + 3 * PG), "no SIGBUS past the end of the file");
	zt_pass();
}

/* The heap: brk grown and data on it; it grows again after the restore. */
static int heap(void)
{
	char *start = sbrk(0);
	SYS((long)sbrk(64 * PG) == -1 ? -1 : 0);
	zt_fill(start, 64 * PG, 21);
	zt_ready();
	zt_wait();
	CHECK(sbrk(0) == start + 64 * PG, "brk moved");
	CHECK(zt_diff(start, 64 * PG, 21) < 0, "heap data");
	CHECK(sbrk(PG) != (void *)-1, "heap cannot grow");
	start[64 * PG] = 1;
	zt_pass();
}

/* Pages written after the restore, in areas never touched before it. */
static int touch_later(void)
{
	char *p = map(NULL, 256 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < 256; i += 4)
		p[i * PG] = (char)i;
	zt_ready();
	zt_wait();
	for (int i = 0; i < 256; i++)
		CHECK(p[i * PG] == (i % 4 ? 0 : (char)i), "page %d", i);
	memset(p, 5, 256 * PG);
	zt_pass();
}

/* Copy-on-write memory of a parent and its children: each sees its own copy, written
 * before and after the restore; shared anonymous memory stays shared. */
static int cow(int file)
{
	int fd = file ? zt_make_file("cow.file", 32 * PG, 1) : -1;
	char *p = map(NULL, 32 * PG, PROT_READ | PROT_WRITE,
		      file ? MAP_PRIVATE : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
	char *sh = map(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	zt_fill(p, 16 * PG, 30); /* half written before the fork: shared COW pages */
	pid_t kids[2];
	for (int k = 0; k < 2; k++) {
		kids[k] = SYS(fork());
		if (kids[k] == 0) {
			zt_fill(p + 8 * PG, 4 * PG, 40 + k); /* some pages of its own */
			sh[k] = 1;
			zt_wait();
			if (zt_diff(p, 8 * PG, 30) >= 0 || zt_diff(p + 8 * PG, 4 * PG, 40 + k) >= 0)
				_exit(1);
			zt_fill(p, 8 * PG, 50 + k); /* writes now are its own */
			sh[10 + k] = 1;
			while (!sh[20])
				usleep(1000);
			_exit(zt_diff(p, 8 * PG, 50 + k) < 0 ? 0 : 2);
		}
	}
	while (!sh[0] || !sh[1])
		usleep(1000);
	zt_ready();
	zt_wait();
	for (int k = 0; k < 2; k++)
		kill(kids[k], SIGTERM);
	while (!sh[10] || !sh[11])
		usleep(1000);
	long d;
	CHECK((d = zt_diff(p, 16 * PG, 30)) < 0, "parent sees a child's write at %ld", d);
	sh[20] = 1;
	for (int k = 0; k < 2; k++) {
		int code = zt_reap(kids[k]);
		CHECK(code == 0, "child %d: %d", k, code);
	}
	zt_pass();
}

/* Shared anonymous memory between parent and child stays one. */
static int shared_anon(void)
{
	volatile int *sh = map(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	zt_fill((char *)sh + PG, 63 * PG, 12);
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_wait();
		while (sh[0] != 1)
			usleep(1000);
		sh[1] = 2;
		_exit(zt_diff((char *)sh + PG, 63 * PG, 12) < 0 ? 0 : 1);
	}
	zt_ready();
	zt_wait();
	kill(c, SIGTERM);
	sh[0] = 1;
	for (int i = 0; i < 5000 && sh[1] != 2; i++)
		usleep(1000);
	CHECK(sh[1] == 2, "the child's write is not seen: the memory is no longer shared");
	CHECK(zt_reap(c) == 0, "child saw other data");
	zt_pass();
}

/* memfd: mapped shared and private, written through the fd, sealed. */
static int memfd(int seals)
{
	int fd = SYS(memfd_create("zdtm-memfd", MFD_ALLOW_SEALING));
	SYS(ftruncate(fd, 8 * PG));
	char *s = map(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	zt_fill(s, 8 * PG, 60);
	char *pv = map(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	zt_fill(pv, PG, 61);
	int want = 0;
	if (seals) {
		munmap(s, 8 * PG);
		want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE;
		SYS(fcntl(fd, F_ADD_SEALS, want));
	}
	lseek(fd, 123, SEEK_SET);
	zt_ready();
	zt_wait();
	CHECK(lseek(fd, 0, SEEK_CUR) == 123, "offset");
	CHECK(fcntl(fd, F_GET_SEALS) == want, "seals %x, expected %x", fcntl(fd, F_GET_SEALS), want);
	char buf[8 * PG];
	SYS(pread(fd, buf, 8 * PG, 0));
	CHECK(zt_diff(buf, 8 * PG, 60) < 0, "memfd content");
	if (!seals) {
		CHECK(zt_diff(s, 8 * PG, 60) < 0, "shared mapping");
		s[0] = 'Q';
		SYS(pread(fd, buf, 1, 0));
		CHECK(buf[0] == 'Q', "the shared mapping is no longer the memfd");
	} else {
		CHECK(write(fd, "x", 1) < 0 && errno == EPERM, "F_SEAL_WRITE lost");
	}
	CHECK(zt_diff(pv, PG, 61) < 0, "private COW page of the memfd");
	char link[256];
	snprintf(buf, sizeof(buf), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(buf, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	CHECK(!strcmp(link, "/memfd:zdtm-memfd (deleted)"), "memfd name %s", link);
	zt_pass();
}

/* A memfd mapped in two processes, no fd left (only the mappings hold it). */
static int memfd_mapped_only(void)
{
	int fd = SYS(memfd_create("only-mapped", 0));
	SYS(ftruncate(fd, 4 * PG));
	volatile char *s = map(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	zt_fill((char *)s + PG, 3 * PG, 70);
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_wait();
		while (s[0] != 1)
			usleep(1000);
		s[1] = 2;
		_exit(0);
	}
	zt_ready();
	zt_wait();
	kill(c, SIGTERM);
	s[0] = 1;
	for (int i = 0; i < 5000 && s[1] != 2; i++)
		usleep(1000);
	CHECK(s[1] == 2, "memfd mapping no longer shared with the child");
	CHECK(zt_diff((char *)s + PG, 3 * PG, 70) < 0, "data");
	CHECK(zt_reap(c) == 0, "child");
	zt_pass();
}

/* Memory locked while root, then the process became an unprivileged user whose
 * RLIMIT_MEMLOCK is 0: its pages stay locked, and it cannot lock more. */
static int mlock_setuid(void)
{
	char *p = map(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	zt_fill(p, 8 * PG, 12);
	SYS(mlock(p, 8 * PG));
	struct rlimit r = { 0, 0 };
	SYS(setrlimit(RLIMIT_MEMLOCK, &r));
	SYS(setresgid(65534, 65534, 65534));
	SYS(setresuid(65534, 65534, 65534));
	char before[256], now[256];
	vmflags(p, before, sizeof(before));
	zt_ready();
	zt_wait();
	vmflags(p, now, sizeof(now));
	CHECK(!strcmp(now, before) && strstr(now, " lo"), "VmFlags%s, were%s", now, before);
	CHECK(zt_diff(p, 8 * PG, 12) < 0, "data");
	CHECK(getuid() == 65534 && geteuid() == 65534, "ids");
	char *q = map(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(mlock(q, PG) < 0, "an unprivileged process locked more than RLIMIT_MEMLOCK");
	zt_pass();
}

/* One shared anonymous object seen through pieces at other offsets: the parent
 * unmapped a hole in its mapping and moved its tail elsewhere (mremap), the child kept
 * the whole; and a MAP_SHARED mapping of /dev/zero. After the restore the child's
 * writes show in each of the parent's pieces. */
static int shared_anon_split(int devzero)
{
	int fd = devzero ? SYS(open("/dev/zero", O_RDWR)) : -1;
	char *sh = map(NULL, 8 * PG, PROT_READ | PROT_WRITE,
		       MAP_SHARED | (devzero ? 0 : MAP_ANONYMOUS), fd, 0);
	if (fd >= 0)
		close(fd);
	zt_fill(sh, 8 * PG, 13);
	pid_t c = SYS(fork());
	if (c == 0) {
		zt_wait();
		for (int i = 0; i < 8; i++)
			sh[i * PG + 7] = (char)(0x70 + i);
		_exit(0);
	}
	SYS(munmap(sh + 2 * PG, 2 * PG));
	char *tail = mremap(sh + 6 * PG, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
			    sh + 64 * PG);
	if (tail == MAP_FAILED)
		zt_setup_fail("mremap: %s", strerror(errno));
	zt_ready();
	zt_wait();
	kill(c, SIGTERM);
	CHECK(zt_reap(c) == 0, "child");
	int at[] = { 0, 1, 4, 5 };
	for (int k = 0; k < 4; k++)
		CHECK(sh[at[k] * PG + 7] == (char)(0x70 + at[k]), "page %d: the child's write is not "
		      "seen", at[k]);
	for (int k = 0; k < 2; k++)
		CHECK(tail[k * PG + 7] == (char)(0x76 + k), "moved page %d: the child's write is "
		      "not seen", 6 + k);
	zt_pass();
}

/* Copy-on-write memory whose protection differs between parent and child (as criu's
 * cow02): a range the parent reserved PROT_NONE and never touched, which the child
 * made writable and filled; and one both wrote, half changed by the child, which the
 * parent then hid (PROT_NONE). Each sees its own bytes after. */
static int cow_reserved(void)
{
	const size_t len = 32 * PG;
	char *res = map(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *both = map(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	zt_fill(both, len, 5);
	int ready[2];
	SYS(pipe(ready));
	pid_t c = SYS(fork());
	if (c == 0) {
		close(ready[0]);
		if (mprotect(res, len, PROT_READ | PROT_WRITE))
			_exit(9);
		zt_fill(res, len, 77);
		zt_fill(both + len / 2, len / 2, 99);
		close(ready[1]);
		zt_wait();
		_exit(zt_diff(res, len, 77) < 0 && zt_diff(both, len / 2, 5) < 0
		      && zt_diff(both + len / 2, len / 2, 99) < 0 ? 0 : 1);
	}
	close(ready[1]);
	char x;
	SYS(read(ready[0], &x, 1));  /* EOF: the child is set */
	SYS(mprotect(both, len, PROT_NONE));
	zt_ready();
	zt_wait();
	SYS(mprotect(both, len, PROT_READ));
	CHECK(zt_diff(both, len, 5) < 0, "the parent's hidden copy changed");
	zt_children_verdict(&c, 1);
	zt_pass();
}

int main(int argc, char **argv)
{
	const char *m = zt_mode(argc, argv);
	zt_init();
	if (!strcmp(m, "mappings")) return mappings();
	if (!strcmp(m, "mprotect")) return mprotect_check();
	if (!strcmp(m, "madvise")) return madvise_flags(0);
	if (!strcmp(m, "madvise-access")) return madvise_flags(1);
	if (!strcmp(m, "mlock")) return mlocked();
	if (!strcmp(m, "shared-anon-split")) return shared_anon_split(0);
	if (!strcmp(m, "shared-devzero")) return shared_anon_split(1);
	if (!strcmp(m, "mlock-setuid")) return mlock_setuid();
	if (!strcmp(m, "growsdown")) return growsdown();
	if (!strcmp(m, "high-map")) return high_map();
	if (!strcmp(m, "many-maps")) return many_maps();
	if (!strcmp(m, "past-eof")) return past_eof();
	if (!strcmp(m, "heap")) return heap();
	if (!strcmp(m, "touch-later")) return touch_later();
	if (!strcmp(m, "cow-anon")) return cow(0);
	if (!strcmp(m, "cow-file")) return cow(1);
	if (!strcmp(m, "cow-reserved")) return cow_reserved();
	if (!strcmp(m, "shared-anon")) return shared_anon();
	if (!strcmp(m, "memfd")) return memfd(0);
	if (!strcmp(m, "memfd-sealed")) return memfd(1);
	if (!strcmp(m, "memfd-mapped-only")) return memfd_mapped_only();
	if (!strcmp(m, "noreserve")) return noreserve();
	if (!strcmp(m, "secretmem")) return secretmem();
	if (!strcmp(m, "guard-pages")) return guard_pages();
	if (!strcmp(m, "droppable")) return droppable();
	if (!strcmp(m, "mlockall-future")) return mlockall_future(0);
	if (!strcmp(m, "mlockall-onfault")) return mlockall_future(1);
	zt_setup_fail("unknown mode %s", m);
}
