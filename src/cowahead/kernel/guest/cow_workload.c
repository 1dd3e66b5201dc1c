/*
 * cow_workload PAGES STREAM: after fork, the child writes the pages listed
 * in the file STREAM (page indices, whitespace separated) of a PAGES-page
 * region the parent populated; prints one JSON object with the /proc/vmstat
 * deltas over the child's writes ("during"), over the child's munmap of the
 * region ("unmap", where COW-ahead copies never written are counted), and
 * the child's monotonic nanoseconds for the writes (instructions, under
 * QEMU -icount shift=0) and for the same writes repeated without faults.
 *
 * The same events as the model's generator: mmap, parent writes every page
 * (zero-fill), fork, child writes the stream, child exits. The child
 * unmaps the region itself before exiting, so that the unused count is the
 * region's alone, not also that of COW-ahead copies of its stack.
 */
#include "common.h"
#include <sys/wait.h>
#include <time.h>

struct child_report {
	long long before[NCOUNTERS], after[NCOUNTERS], unmapped[NCOUNTERS];
	long long ns;
	long long rewrite_ns;	/* the same writes again, now without faults: the user-space share */
};

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

int main(int argc, char **argv)
{
	unsigned long pages, count, i;
	long *stream;
	char *base;
	int report_pipe[2], go_pipe[2];
	char go = 0;
	struct child_report report;
	long long warm[NCOUNTERS];
	pid_t child;
	int status;

	if (argc != 3) {
		fprintf(stderr, "usage: cow_workload PAGES STREAM\n");
		return 2;
	}
	pages = strtoul(argv[1], NULL, 0);
	stream = read_stream(argv[2], pages, &count);
	base = isolated_region(pages);
	for (i = 0; i < pages; i++)
		((volatile long *)(base + i * PAGE))[0] = i + 1;
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
		read_counters(report.before);
		read_counters(report.before);
		report.ns = now_ns();
		for (i = 0; i < count; i++)
			((volatile long *)(base + stream[i] * PAGE))[0] = value++;
		report.ns = now_ns() - report.ns;
		read_counters(report.after);
		/* Pages the stream wrote are dirty already: rewriting them leaves the unused count alone. */
		report.rewrite_ns = now_ns();
		for (i = 0; i < count; i++)
			((volatile long *)(base + stream[i] * PAGE))[0] = value++;
		report.rewrite_ns = now_ns() - report.rewrite_ns;
		if (munmap(base, pages * PAGE))
			_exit(3);
		read_counters(report.unmapped);
		if (write(report_pipe[1], &report, sizeof(report)) != sizeof(report))
			_exit(3);
		_exit(0);
	}
	memset(&report, 0, sizeof(report));	/* the parent's COW faults, before the child measures */
	if (write(go_pipe[1], &go, 1) != 1)
		die("write go");
	if (read(report_pipe[0], &report, sizeof(report)) != sizeof(report))
		die("read report");
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		die("child");
	printf("{\"pages\": %lu, \"writes\": %lu, \"child_ns\": %lld, \"rewrite_ns\": %lld, ",
	       pages, count, report.ns, report.rewrite_ns);
	print_delta("during", report.before, report.after);
	printf(", ");
	print_delta("unmap", report.after, report.unmapped);
	printf("}\n");
	return 0;
}
