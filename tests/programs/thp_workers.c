/* A fork-heavy program on large folios: map SIZE MiB, 2 MiB aligned, optionally madvise it (14:
 * MADV_HUGEPAGE), write every page, fork WORKERS children that each write every page of their share.
 * It prints its own minor-fault counts (getrusage) around each loop: the kernel's count to hold a
 * recorded trace's replay against.
 *
 *     thp_workers SIZE_MIB WORKERS ADVICE
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define PAGE 4096UL

static long minflt(void)
{
	struct rusage r;
	getrusage(RUSAGE_SELF, &r);
	return r.ru_minflt;
}

int main(int argc, char **argv)
{
	size_t size = (argc > 1 ? strtoul(argv[1], NULL, 10) : 256) * MIB;
	int workers = argc > 2 ? atoi(argv[2]) : 4;
	int advice = argc > 3 ? atoi(argv[3]) : MADV_HUGEPAGE;
	char *raw = mmap(NULL, size + 2 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		return perror("mmap"), 1;
	/* Keep exactly the 2 MiB aligned SIZE: the VMA then holds SIZE / 2 MiB whole PMDs. */
	char *p = (char *)(((unsigned long)raw + 2 * MIB - 1) & ~(2 * MIB - 1));
	if (p > raw)
		munmap(raw, p - raw);
	munmap(p + size, raw + size + 2 * MIB - (p + size));
	if (advice && madvise(p, size, advice))
		return perror("madvise"), 1;
	long before = minflt();
	for (size_t off = 0; off < size; off += PAGE)
		p[off] = 1;
	printf("fill minflt %ld\n", minflt() - before);
	fflush(stdout);
	size_t share = size / workers;
	for (int w = 0; w < workers; w++) {
		if (fork() == 0) {
			long start = minflt();
			for (size_t off = w * share; off < (w + 1) * share; off += PAGE)
				p[off] = 2;
			long faults = minflt() - start;
			printf("worker %d minflt %ld\n", w, faults);
			fflush(stdout);
			_exit(0);
		}
	}
	while (wait(NULL) > 0)
		;
	return 0;
}
