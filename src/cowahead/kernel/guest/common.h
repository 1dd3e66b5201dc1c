/* Shared by the guest programs: an isolated, 2 MiB aligned anonymous region, and /proc/vmstat. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL
#define PMD_SPAN (2UL << 20)

static inline void die(const char *what)
{
	perror(what);
	exit(2);
}

/*
 * A private anonymous region of @pages pages starting on a page-table
 * boundary, with PROT_NONE neighbours so it never merges with another VMA:
 * the COW-ahead window then clips exactly where the model's VMA ends.
 */
static inline char *isolated_region(unsigned long pages)
{
	unsigned long len = pages * PAGE;
	char *reserve = mmap(NULL, len + 2 * PMD_SPAN, PROT_NONE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *base;

	if (reserve == MAP_FAILED)
		die("mmap reserve");
	base = (char *)(((uintptr_t)reserve + PMD_SPAN) & ~(PMD_SPAN - 1));
	if (mmap(base, len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != base)
		die("mmap region");
	madvise(base, len, MADV_NOHUGEPAGE);	/* 4 KiB pages, as the model */
	return base;
}

static const char *const counter_names[] = {
	"cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse", "cow_ahead_unused",
	"pgfault", "pgreuse",
};
#define NCOUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))

static char vmstat_text[32768];

/* Append a "name value" file to vmstat_text at @total; returns the new length (unchanged if it is missing). */
static inline ssize_t append_file(const char *path, ssize_t total, int required)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0) {
		if (required)
			die(path);
		return total;
	}
	while ((n = read(fd, vmstat_text + total, sizeof(vmstat_text) - 1 - total)) > 0)
		total += n;
	close(fd);
	return total;
}

/*
 * Read the counters from /proc/vmstat (the 6.1 patch's and the stock ones)
 * and /proc/cow_ahead_stat (the 6.12 patch's); -1 for any this kernel lacks.
 * No allocation, no new pages touched after the first call.
 */
static inline void read_counters(long long *out)
{
	ssize_t total;
	unsigned i;

	total = append_file("/proc/vmstat", 0, 1);
	total = append_file("/proc/cow_ahead_stat", total, 0);
	vmstat_text[total] = 0;
	for (i = 0; i < NCOUNTERS; i++) {
		size_t len = strlen(counter_names[i]);
		char *line = vmstat_text;

		out[i] = -1;
		while (line && *line) {
			if (!strncmp(line, counter_names[i], len) && line[len] == ' ') {
				out[i] = atoll(line + len + 1);
				break;
			}
			line = strchr(line, '\n');
			if (line)
				line++;
		}
	}
}

static inline void print_delta(const char *key, const long long *before, const long long *after)
{
	unsigned i;

	printf("\"%s\": {", key);
	for (i = 0; i < NCOUNTERS; i++)
		printf("%s\"%s\": %lld", i ? ", " : "", counter_names[i],
		       before[i] < 0 ? -1 : after[i] - before[i]);
	printf("}");
}
