/*
 * cow_workload [-s SETUP] PAGES STREAM [PARENT_STREAM]: after fork, the child writes
 * the pages listed in the file STREAM (page indices, whitespace separated)
 * of a PAGES-page region the parent populated; then, if PARENT_STREAM is
 * given, the parent writes its pages while the child still maps the region
 * (so the parent finds pages the child already copied away: exclusive,
 * write-protected, reused in place). Prints one JSON object with the
 * /proc/vmstat deltas over the writes ("during"), over the munmap of the
 * region by the child and then the parent ("unmap", where COW-ahead copies
 * never written are counted), the child's monotonic nanoseconds for its
 * writes (instructions, under QEMU -icount shift=0) and for the same writes
 * repeated without faults.
 *
 * The same events as the model's trace: mmap, parent writes every page
 * (zero-fill), fork, child writes STREAM, parent writes PARENT_STREAM,
 * both exit. Each process unmaps the region itself before exiting, so that
 * the unused count is the region's alone, not also that of COW-ahead copies
 * of a stack.
 *
 * SETUP, if given, replaces "MADV_NOHUGEPAGE over the region, then write
 * every page" (the region is then left as the THP knobs make it) as what the parent does before fork: one operation a line,
 * "w P" (write page P), "r P" (read it), "d P N" (MADV_DONTNEED of N pages
 * from P), "h P N" / "n P N" (MADV_HUGEPAGE / MADV_NOHUGEPAGE). Then the
 * counter deltas over the setup ("setup") and the region's layout
 * (pagemap, kpageflags) after it ("layout_fork", the parent), after the
 * child's writes ("layout_child") and after the parent's ("layout_parent")
 * are printed too.
 */
#include "common.h"
#include <sys/wait.h>
#include <time.h>

struct child_report {
	long long before[NCOUNTERS], after[NCOUNTERS];
	struct layout layout;	/* the region after the child's writes */
	long long ns;
	long long rewrite_ns;	/* the same writes again, now without faults: the user-space share */
};

struct child_unmap_report {
	long long before[NCOUNTERS], after[NCOUNTERS];
};

static void add_delta(long long *sum, const long long *before, const long long *after)
{
	unsigned i;

	for (i = 0; i < NCOUNTERS; i++)
		sum[i] = before[i] < 0 ? -1 : sum[i] + after[i] - before[i];
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long *read_stream(const char *path, unsigned long pages, unsigned long *count)
{
	FILE *f = fopen(path, "r");
	unsigned long cap = 1024, n = 0;
	long *stream = malloc(cap * sizeof(*stream));
	long page;

	if (!f || !stream)
		die(path);
	while (fscanf(f, "%ld", &page) == 1) {
		if (page < 0 || (unsigned long)page >= pages) {
			fprintf(stderr, "cow_workload: page %ld outside 0..%lu\n", page, pages - 1);
			exit(2);
		}
		if (n == cap && !(stream = realloc(stream, (cap *= 2) * sizeof(*stream))))
			die("realloc");
		stream[n++] = page;
	}
	fclose(f);
	*count = n;
	return stream;
}

/* The parent's work before fork: SETUP's operations (see the top), or the default. */
static void setup_region(char *base, unsigned long pages, const char *path)
{
	FILE *f;
	char op;
	long p, n;

	if (!path) {	/* isolated_region made it MADV_NOHUGEPAGE: 4 KiB pages, as the model */
		for (p = 0; p < (long)pages; p++)
			((volatile long *)(base + p * PAGE))[0] = p + 1;
		return;
	}
	if (!(f = fopen(path, "r")))
		die(path);
	while (fscanf(f, " %c %ld", &op, &p) == 2) {
		n = 1;
		if (strchr("dhn", op) && fscanf(f, "%ld", &n) != 1)
			n = -1;
		if (p < 0 || n < 1 || (unsigned long)(p + n) > pages) {
			fprintf(stderr, "cow_workload: bad setup operation %c %ld %ld\n", op, p, n);
			exit(2);
		}
		if (op == 'w')
			((volatile long *)(base + p * PAGE))[0] = p + 1;
		else if (op == 'r')
			(void)((volatile long *)(base + p * PAGE))[0];
		else if (op == 'd' || op == 'h' || op == 'n') {
			int advice = op == 'd' ? MADV_DONTNEED : op == 'h' ? MADV_HUGEPAGE : MADV_NOHUGEPAGE;

			if (madvise(base + p * PAGE, n * PAGE, advice))
				die("madvise");
		} else {
			fprintf(stderr, "cow_workload: unknown setup operation %c\n", op);
			exit(2);
		}
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	unsigned long pages, count, parent_count = 0, i;
	long *stream, *parent_stream = NULL;
	char *base;
	int report_pipe[2], go_pipe[2];
	char go = 0;
	struct child_report report;
	struct child_unmap_report unmap_report;
	long long warm[NCOUNTERS], p0[NCOUNTERS], p1[NCOUNTERS], q0[NCOUNTERS], q1[NCOUNTERS];
	long long during[NCOUNTERS] = { 0 }, unmapped[NCOUNTERS] = { 0 }, zero[NCOUNTERS] = { 0 };
	long long s0[NCOUNTERS], s1[NCOUNTERS];
	struct layout layout_fork = { -1, -1, -1 }, layout_parent = { -1, -1, -1 };
	const char *setup = NULL;
	pid_t child;
	int status;

	if (argc > 2 && !strcmp(argv[1], "-s")) {
		setup = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: cow_workload [-s SETUP] PAGES STREAM [PARENT_STREAM]\n");
		return 2;
	}
	pages = strtoul(argv[1], NULL, 0);
	stream = read_stream(argv[2], pages, &count);
	if (argc == 4)
		parent_stream = read_stream(argv[3], pages, &parent_count);
	base = isolated_region_thp(pages, !setup);	/* a setup says what it wants */
	read_counters(s0);
	setup_region(base, pages, setup);
	read_counters(s1);
	if (setup)
		layout_fork = region_layout(base, pages);
	read_counters(warm);	/* fault in vmstat_text before fork, in the parent */
	if (pipe(report_pipe) || pipe(go_pipe))
		die("pipe");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		long value = 1L << 40;

		/*
		 * Wait until the parent has taken its own COW faults (its stack) and
		 * can only block; the child's own (stack, vmstat_text) happen before
		 * the first snapshot.
		 */
		if (read(go_pipe[0], &go, 1) != 1)
			_exit(3);
		memset(&report, 0, sizeof(report));
		memset(&unmap_report, 0, sizeof(unmap_report));
		/*
		 * now_ns() once before the snapshot: its first call writes a
		 * stack page the child had not written since fork, a reuse
		 * fault (or a copy, if the parent had not copied it yet) that
		 * showed as one pgreuse too many inside the snapshot.
		 */
		report.ns = now_ns();
		read_counters(report.before);
		read_counters(report.before);
		report.ns = now_ns();
		for (i = 0; i < count; i++)
			((volatile long *)(base + stream[i] * PAGE))[0] = value++;
		report.ns = now_ns() - report.ns;
		read_counters(report.after);
		report.layout = setup ? region_layout(base, pages) : (struct layout){ -1, -1, -1 };
		/* Pages the stream wrote are dirty already: rewriting them leaves the unused count alone. */
		report.rewrite_ns = now_ns();
		for (i = 0; i < count; i++)
			((volatile long *)(base + stream[i] * PAGE))[0] = value++;
		report.rewrite_ns = now_ns() - report.rewrite_ns;
		if (write(report_pipe[1], &report, sizeof(report)) != sizeof(report))
			_exit(3);
		if (read(go_pipe[0], &go, 1) != 1)	/* the parent has written its stream */
			_exit(3);
		read_counters(unmap_report.before);
		if (munmap(base, pages * PAGE))
			_exit(3);
		read_counters(unmap_report.after);
		if (write(report_pipe[1], &unmap_report, sizeof(unmap_report)) != sizeof(unmap_report))
			_exit(3);
		_exit(0);
	}
	/* The parent's COW faults (stack, vmstat_text), before the child measures. */
	memset(&report, 0, sizeof(report));
	memset(&unmap_report, 0, sizeof(unmap_report));
	read_counters(p0);
	if (write(go_pipe[1], &go, 1) != 1)
		die("write go");
	if (read(report_pipe[0], &report, sizeof(report)) != sizeof(report))
		die("read report");
	add_delta(during, report.before, report.after);
	if (parent_stream) {
		long value = 1L << 41;

		read_counters(p0);
		for (i = 0; i < parent_count; i++)
			((volatile long *)(base + parent_stream[i] * PAGE))[0] = value++;
		read_counters(p1);
		add_delta(during, p0, p1);
	}
	if (setup)
		layout_parent = region_layout(base, pages);
	if (write(go_pipe[1], &go, 1) != 1)
		die("write go");
	if (read(report_pipe[0], &unmap_report, sizeof(unmap_report)) != sizeof(unmap_report))
		die("read unmap report");
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		die("child");
	add_delta(unmapped, unmap_report.before, unmap_report.after);
	if (parent_stream) {
		read_counters(q0);
		if (munmap(base, pages * PAGE))
			die("munmap");
		read_counters(q1);
		add_delta(unmapped, q0, q1);
	}
	printf("{\"pages\": %lu, \"writes\": %lu, \"parent_writes\": %lu, \"child_ns\": %lld, \"rewrite_ns\": %lld, ",
	       pages, count, parent_count, report.ns, report.rewrite_ns);
	print_delta("during", zero, during);
	printf(", ");
	print_delta("unmap", zero, unmapped);
	if (setup) {
		printf(", ");
		print_delta("setup", s0, s1);
		printf(", ");
		print_layout("layout_fork", layout_fork);
		printf(", ");
		print_layout("layout_child", report.layout);
		printf(", ");
		print_layout("layout_parent", layout_parent);
	}
	printf("}\n");
	return 0;
}
