/*
 * Issue 23: a page copy's own instruction count in the guest, under
 * -icount shift=0 (one virtual ns per instruction).  The kernel's COW copy
 * (copy_mc_to_kernel: copy_mc_enhanced_fast_string where the CPU has ERMS)
 * is one `rep movsb` of 4096 bytes, which icount counts per byte; so does
 * this loop, in user space, with nothing else in it.  Prints one JSON
 * line: iterations, ns in the copy loop and in the same loop without the
 * copy, and their difference per page.
 *
 * usage: copy_loop [iterations]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void rep_movsb(void *dst, const void *src, unsigned long n)
{
	asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

int main(int argc, char **argv)
{
	long iterations = argc > 1 ? atol(argv[1]) : 1000;
	static char src[PAGE] __attribute__((aligned(PAGE)));
	static char dst[PAGE] __attribute__((aligned(PAGE)));
	long long t0, t1, t2;
	long i;

	memset(src, 1, PAGE);
	memset(dst, 2, PAGE);	/* both pages present before the clock starts */
	now_ns();		/* its first call may fault the vDSO data in */
	t0 = now_ns();
	for (i = 0; i < iterations; i++)
		rep_movsb(dst, src, PAGE);
	t1 = now_ns();
	for (i = 0; i < iterations; i++)
		rep_movsb(dst, src, 0);
	t2 = now_ns();
	printf("{\"iterations\": %ld, \"copy_ns\": %lld, \"empty_ns\": %lld, "
	       "\"instructions_per_page\": %.1f}\n", iterations, t1 - t0, t2 - t1,
	       (double)((t1 - t0) - (t2 - t1)) / iterations);
	return dst[PAGE - 1] == 1 ? 0 : 1;
}
