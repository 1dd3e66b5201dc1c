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

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#define MADV_NOHUGEPAGE 15
#endif

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
 * With @nohugepage, MADV_NOHUGEPAGE: 4 KiB pages, as the 4 KiB model;
 * without, the THP knobs decide.
 */
static inline char *isolated_region_thp(unsigned long pages, int nohugepage)
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
	if (nohugepage)
		madvise(base, len, MADV_NOHUGEPAGE);	/* 4 KiB pages, as the model */
	return base;
}

static inline char *isolated_region(unsigned long pages)
{
	return isolated_region_thp(pages, 1);
}

static const char *const counter_names[] = {
	"cow_fault_copy", "cow_ahead_copy", "cow_ahead_reuse", "cow_ahead_unused",
	"pgfault", "pgreuse", "thp_fault_alloc", "thp_fault_fallback", "thp_split_pmd",
	"cow_large_alloc", "cow_large_pages", "cow_large_fallback",
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

/*
 * The layout of @pages pages at @base, as pagemap and kpageflags show it
 * (root only): pages present, present in a large folio (KPF_THP: a PMD THP
 * or an mTHP, the huge zero page excluded) and mapping the zero page
 * (KPF_ZERO_PAGE, the huge zero page included). -1 each if unreadable.
 */
#define KPF_THP 22
#define KPF_ZERO_PAGE 24

struct layout {
	long long present, large, zero;
};

static inline struct layout region_layout(const char *base, unsigned long pages)
{
	struct layout l = { -1, -1, -1 };
	int pm = open("/proc/self/pagemap", O_RDONLY), kf = open("/proc/kpageflags", O_RDONLY);
	unsigned long i;

	if (pm >= 0 && kf >= 0) {
		l.present = l.large = l.zero = 0;
		for (i = 0; i < pages; i++) {
			uint64_t entry, flags;
			off_t at = ((uintptr_t)base / PAGE + i) * sizeof(entry);

			if (pread(pm, &entry, sizeof(entry), at) != sizeof(entry) || !(entry >> 63 & 1))
				continue;
			l.present++;
			at = (entry & ((1ULL << 55) - 1)) * sizeof(flags);
			if (pread(kf, &flags, sizeof(flags), at) != sizeof(flags)) {
				l.large = l.zero = -1;
				break;
			}
			if (flags >> KPF_ZERO_PAGE & 1)
				l.zero++;
			else if (flags >> KPF_THP & 1)
				l.large++;
		}
	}
	if (pm >= 0)
		close(pm);
	if (kf >= 0)
		close(kf);
	return l;
}

static inline void print_layout(const char *key, struct layout l)
{
	printf("\"%s\": {\"present\": %lld, \"large\": %lld, \"zero\": %lld}", key, l.present, l.large, l.zero);
}
