/*
 * issue19 CASE: reproducers of the six findings of issue 19 against the
 * 6.1 COW-ahead patch, run in the guest with COW-ahead set by the caller
 * (vm.cow_ahead_pages / vm.cow_ahead_policy; inguest.py sets them).
 * Prints one JSON object, with "ok": true when the kernel behaved as Linux
 * without COW-ahead must (what each case checks is said at its function).
 * The kernel log is checked by the caller after every run (BUG, WARNING,
 * Bad page): a case can print "ok": true and still fail there.
 *
 * Cases: missing_table, thp_tail, soft_dirty_copy, soft_dirty_reuse, oom,
 * ksm, zero_page, adaptive_split.  Exit status: 0 ok, 1 not ok, 2 could not
 * run (the JSON says why, where it can), 4 skipped (kselftest's KSFT_SKIP:
 * the kernel lacks what the case needs; the JSON has "skipped": true and
 * the reason).
 */
#include "common.h"
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define PAGEMAP_SOFT_DIRTY	(1ULL << 55)
#define PAGEMAP_PRESENT		(1ULL << 63)
#define PAGEMAP_PFN		((1ULL << 55) - 1)

/* One counter from /proc/vmstat or /proc/cow_ahead_stat; -1 if neither has it. */
static long long counter(const char *name)
{
	ssize_t total = append_file("/proc/vmstat", 0, 1);
	size_t len = strlen(name);
	char *line;

	total = append_file("/proc/cow_ahead_stat", total, 0);
	vmstat_text[total] = 0;
	for (line = vmstat_text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (!strncmp(line, name, len) && line[len] == ' ')
			return atoll(line + len + 1);
	return -1;
}

static void write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		die(path);
	close(fd);
}

static uint64_t pagemap_entry(const void *addr)
{
	static int fd = -1;
	uint64_t entry = 0;

	if (fd < 0)
		fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || pread(fd, &entry, sizeof(entry), (uintptr_t)addr / PAGE * sizeof(entry)) != sizeof(entry))
		die("pagemap");
	return entry;
}

static int wait_child(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/*
 * Finding 1: a window reaching into a page table that does not exist.  A
 * 4 MiB region, 2 MiB aligned; only page 511 written before the fork, so
 * the second page table is never allocated.  The child writes page 511:
 * a fixed:16 window asks for pages 512-526, whose PMD is none.  Nothing
 * there to copy: ok when no page was copied ahead and both processes see
 * their own data (the caller's dmesg check catches a "Bad page map").
 */
static int missing_table(void)
{
	char *base = isolated_region(1024);
	long long before, ahead = -1;
	int fds[2], status, ok;
	pid_t pid;

	base[511 * PAGE] = 1;
	if (pipe(fds))
		die("pipe");
	pid = fork();
	if (pid == 0) {
		before = counter("cow_ahead_copy");
		base[511 * PAGE] = 2;
		ahead = counter("cow_ahead_copy") - before;
		if (write(fds[1], &ahead, sizeof(ahead)) != sizeof(ahead))
			die("write");
		_exit(base[511 * PAGE] == 2 && base[512 * PAGE] == 0 ? 0 : 1);
	}
	if (read(fds[0], &ahead, sizeof(ahead)) != sizeof(ahead))
		die("read");
	status = wait_child(pid);
	ok = status == 0 && base[511 * PAGE] == 1 && ahead <= 0;
	printf("{\"case\": \"missing_table\", \"ok\": %s, \"child_status\": %d, \"ahead_copies\": %lld}\n",
	       ok ? "true" : "false", status, ahead);
	return !ok;
}

/* AnonHugePages (kB) of the mapping that starts at @addr, from /proc/self/smaps. */
static long anon_huge_kb(const void *addr)
{
	static char smaps[1 << 20];
	char start[32];
	ssize_t total = 0, n;
	int fd = open("/proc/self/smaps", O_RDONLY);
	char *at, *huge;

	if (fd < 0)
		return -1;
	while ((n = read(fd, smaps + total, sizeof(smaps) - 1 - total)) > 0)
		total += n;
	close(fd);
	smaps[total] = 0;
	snprintf(start, sizeof(start), "%lx-", (unsigned long)addr);
	at = strstr(smaps, start);
	if (!at)
		return -1;
	huge = strstr(at, "AnonHugePages:");
	return huge ? atol(huge + strlen("AnonHugePages:")) : -1;
}

/*
 * Finding 2: unmapping a PTE-mapped THP's tail page (the 6.1 zap hunk's
 * PF_NO_TAIL BUG), and the large-folio rule.  A 4 MiB region: first page
 * table of small pages (MADV_NOHUGEPAGE), second one THP (MADV_HUGEPAGE).
 * After the fork the child zaps one 4 KiB page of the THP (MADV_DONTNEED:
 * the PMD is split, the folio stays PTE-mapped), then writes page 500: a
 * window of up to 511 pages reaches the PTE-mapped large folio, which
 * COW-ahead must skip.  Ok when at most pages 501-511 (small, shared) were
 * copied ahead, every page holds what each process wrote, and the zapped
 * page reads zero.  Needs THP: skipped on a kernel without it (no
 * /sys/kernel/mm/transparent_hugepage), could not run where no THP formed.
 */
#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage"
static int thp_tail(void)
{
	unsigned long pages = 1024, i;
	char *reserve = mmap(NULL, (pages * PAGE) + PMD_SPAN, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *base = (char *)(((uintptr_t)reserve + PMD_SPAN - 1) & ~(PMD_SPAN - 1));
	long long ahead = -1, before;
	int fds[2], status, ok, data_ok = 1;
	long huge_kb;
	pid_t pid;

	if (access(THP_SYSFS, F_OK)) {
		printf("{\"case\": \"thp_tail\", \"skipped\": true, \"reason\": \"this kernel has no THP (no "
		       THP_SYSFS "): there is no PTE-mapped THP tail page to unmap\"}\n");
		return 4;
	}
	if (reserve == MAP_FAILED)
		die("mmap");
	madvise(base, PMD_SPAN, MADV_NOHUGEPAGE);
	madvise(base + PMD_SPAN, PMD_SPAN, MADV_HUGEPAGE);
	for (i = 0; i < pages; i++)
		base[i * PAGE] = (char)(i % 100 + 1);
	huge_kb = anon_huge_kb(base + PMD_SPAN);
	if (huge_kb < (long)(PMD_SPAN / 1024)) {
		printf("{\"case\": \"thp_tail\", \"ok\": false, \"error\": \"no THP formed (AnonHugePages %ld kB)\"}\n",
		       huge_kb);
		return 2;
	}
	if (pipe(fds))
		die("pipe");
	pid = fork();
	if (pid == 0) {
		int bad = 0;

		madvise(base + 600 * PAGE, PAGE, MADV_DONTNEED);	/* a tail page of the THP */
		before = counter("cow_ahead_copy");
		base[500 * PAGE] = 101;
		ahead = counter("cow_ahead_copy") - before;
		if (write(fds[1], &ahead, sizeof(ahead)) != sizeof(ahead))
			die("write");
		for (i = 0; i < pages; i++) {
			char want = i == 500 ? 101 : i == 600 ? 0 : (char)(i % 100 + 1);

			bad += base[i * PAGE] != want;
		}
		madvise(base + PMD_SPAN, PMD_SPAN, MADV_DONTNEED);	/* the rest of it, tails included */
		_exit(bad ? 1 : 0);
	}
	if (read(fds[0], &ahead, sizeof(ahead)) != sizeof(ahead))
		die("read");
	status = wait_child(pid);
	for (i = 0; i < pages; i++)
		data_ok &= base[i * PAGE] == (char)(i % 100 + 1);
	madvise(base + PMD_SPAN + 3 * PAGE, PAGE, MADV_DONTNEED);	/* the parent's tail page too */
	data_ok &= base[PMD_SPAN + 3 * PAGE] == 0;
	ok = status == 0 && data_ok && ahead >= 0 && ahead <= 11;
	printf("{\"case\": \"thp_tail\", \"ok\": %s, \"thp_kb_before_fork\": %ld, \"child_status\": %d, "
	       "\"ahead_copies\": %lld, \"parent_data_ok\": %s}\n", ok ? "true" : "false", huge_kb, status, ahead,
	       data_ok ? "true" : "false");
	return !ok;
}

/*
 * Finding 3: soft-dirty.  After clear_refs (soft-dirty tracking on), the
 * parent writes page 0 of 16 and then pages 1-15; every page written must
 * read soft-dirty in /proc/self/pagemap.  "copy": the child still shares
 * all 16 pages, so a window would copy 1-15; "reuse": the child has
 * written (copied away) 1-15 first, so the parent's 1-15 are exclusive and
 * a window would reuse them in place.
 */
static int soft_dirty(int reuse)
{
	const unsigned long pages = 16;
	char *base = isolated_region(pages);
	int to_child[2], to_parent[2], status, not_soft_dirty = 0;
	long long copies, reuses;
	unsigned long i;
	char c = 0;
	pid_t pid;

	for (i = 0; i < pages; i++)
		base[i * PAGE] = 1;
	if (pipe(to_child) || pipe(to_parent))
		die("pipe");
	pid = fork();
	if (pid == 0) {
		if (reuse)
			for (i = 1; i < pages; i++)
				base[i * PAGE] = 2;
		if (write(to_parent[1], &c, 1) != 1 || read(to_child[0], &c, 1) != 1)
			die("child pipe");
		_exit(0);
	}
	if (read(to_parent[0], &c, 1) != 1)
		die("read");
	write_text("/proc/self/clear_refs", "4");
	copies = counter("cow_ahead_copy");
	reuses = counter("cow_ahead_reuse");
	base[0] = 3;
	copies = counter("cow_ahead_copy") - copies;
	reuses = counter("cow_ahead_reuse") - reuses;
	for (i = 1; i < pages; i++)
		base[i * PAGE] = 3;
	for (i = 0; i < pages; i++)
		not_soft_dirty += !(pagemap_entry(base + i * PAGE) & PAGEMAP_SOFT_DIRTY);
	if (write(to_child[1], &c, 1) != 1)
		die("write");
	status = wait_child(pid);
	printf("{\"case\": \"soft_dirty_%s\", \"ok\": %s, \"written_pages\": %lu, \"not_soft_dirty\": %d, "
	       "\"ahead_copies\": %lld, \"ahead_reuses\": %lld, \"child_status\": %d}\n", reuse ? "reuse" : "copy",
	       not_soft_dirty == 0 && status == 0 ? "true" : "false", pages, not_soft_dirty, copies, reuses, status);
	return not_soft_dirty != 0 || status != 0;
}

/* Mount cgroup2 on /sys/fs/cgroup if nothing is there; 0 on success. */
static int cgroup2_ready(void)
{
	struct stat st;

	if (stat("/sys/fs/cgroup/cgroup.controllers", &st) == 0)
		return 0;
	return mount("none", "/sys/fs/cgroup", "cgroup2", 0, NULL);
}

/* A key's value in a cgroup's "key value" file such as memory.events. */
static long long cgroup_key(const char *path, const char *key)
{
	char buf[4096] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;
	char *at;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	for (at = buf; (at = strstr(at, key)); at++)
		if ((at == buf || at[-1] == '\n') && at[strlen(key)] == ' ')
			return atoll(at + strlen(key) + 1);
	return -1;
}

/*
 * Finding 4: look-ahead allocations must not OOM-kill.  In a memory cgroup
 * of memory.max=10M, a 9 MiB region is written, then after a fork the
 * child writes one byte at the start of the region's last page table: a
 * 512-page window would need 2 MiB more than the limit allows.  Ok when
 * nobody is OOM-killed (memory.events oom_kill stays 0) and the child
 * exits normally; cow_ahead_alloc_fail tells whether the window did hit
 * the limit.  @large (oom_large, issue 23): the region without
 * MADV_NOHUGEPAGE, so that the THP knobs make its folios and, with
 * vm.cow_ahead_large_destinations, the window's blocks large destination
 * folios that the limit refuses (cow_large_fallback counts them).
 */
static int oom(int large)
{
	const unsigned long pages = 2304;	/* 9 MiB */
	char dir[64], path[128], pid_text[32];
	long long kills, fails, fallbacks, allocs;
	unsigned long i;
	char *base;
	int status;
	pid_t pid;

	if (cgroup2_ready()) {
		printf("{\"case\": \"oom\", \"ok\": false, \"error\": \"no cgroup2\"}\n");
		return 2;
	}
	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/cowahead-oom-%d", getpid());
	write_text("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
	if (mkdir(dir, 0755) && errno != EEXIST)
		die("mkdir cgroup");
	snprintf(path, sizeof(path), "%s/memory.max", dir);
	write_text(path, "10M");
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	snprintf(pid_text, sizeof(pid_text), "%d", getpid());
	write_text(path, pid_text);

	base = isolated_region_thp(pages, !large);
	for (i = 0; i < pages; i++)
		base[i * PAGE] = 1;
	fails = counter("cow_ahead_alloc_fail");
	fallbacks = counter("cow_large_fallback");
	allocs = counter("cow_large_alloc");
	pid = fork();
	if (pid == 0) {
		base[1536 * PAGE] = 2;
		_exit(base[1536 * PAGE] == 2 ? 0 : 1);
	}
	status = wait_child(pid);
	fails = fails < 0 ? -1 : counter("cow_ahead_alloc_fail") - fails;
	fallbacks = fallbacks < 0 ? -1 : counter("cow_large_fallback") - fallbacks;
	allocs = allocs < 0 ? -1 : counter("cow_large_alloc") - allocs;
	snprintf(path, sizeof(path), "%s/memory.events", dir);
	kills = cgroup_key(path, "oom_kill");
	munmap(base, pages * PAGE);
	write_text("/sys/fs/cgroup/cgroup.procs", pid_text);
	rmdir(dir);
	printf("{\"case\": \"%s\", \"ok\": %s, \"oom_kills\": %lld, \"child_status\": %d, "
	       "\"ahead_alloc_failures\": %lld, \"large_allocs\": %lld, \"large_fallbacks\": %lld}\n",
	       large ? "oom_large" : "oom", kills == 0 && status == 0 ? "true" : "false", kills, status, fails,
	       allocs, fallbacks);
	return !(kills == 0 && status == 0);
}

/* Pages of @base mapped to the same frame as page @ref (pagemap PFNs: root sees them). */
static long same_frame(char *base, unsigned long pages, unsigned long ref)
{
	uint64_t pfn = pagemap_entry(base + ref * PAGE) & PAGEMAP_PFN;
	unsigned long i;
	long n = 0;

	for (i = 0; i < pages; i++)
		n += pfn && (pagemap_entry(base + i * PAGE) & PAGEMAP_PFN) == pfn;
	return n;
}

/*
 * Finding 5a: KSM.  64 identical pages merged by ksmd into one frame (no
 * fork at all); one byte written into page 0 (a COW fault on a KSM page).
 * Ok when the 63 others still map the merged frame (pagemap PFNs; the
 * per-process ksm_merging_pages count only changes at ksmd's next scan).
 */
static int ksm(void)
{
	const unsigned long pages = 64;
	char *base = isolated_region(pages);
	long merged = -1, after, waited;
	long long copies;

	memset(base, 0x5a, pages * PAGE);
	write_text("/sys/kernel/mm/ksm/pages_to_scan", "4096");
	write_text("/sys/kernel/mm/ksm/sleep_millisecs", "10");
	write_text("/sys/kernel/mm/ksm/run", "1");
	if (madvise(base, pages * PAGE, MADV_MERGEABLE))
		die("MADV_MERGEABLE");
	for (waited = 0; waited < 600; waited++) {	/* up to 60 s under TCG */
		merged = same_frame(base, pages, 1);
		if (merged >= (long)pages)
			break;
		usleep(100000);
	}
	if (merged < (long)pages) {
		printf("{\"case\": \"ksm\", \"ok\": false, \"error\": \"ksmd merged %ld of %lu pages in 60 s\"}\n",
		       merged, pages);
		write_text("/sys/kernel/mm/ksm/run", "2");
		return 2;
	}
	copies = counter("cow_ahead_copy");
	base[0] = 1;
	copies = counter("cow_ahead_copy") - copies;
	after = same_frame(base, pages, 1);
	write_text("/sys/kernel/mm/ksm/run", "2");	/* unmerge all, stop */
	printf("{\"case\": \"ksm\", \"ok\": %s, \"merged_before\": %ld, \"merged_after\": %ld, "
	       "\"ahead_copies\": %lld}\n", after == merged - 1 ? "true" : "false", merged, after, copies);
	return after != merged - 1;
}

/*
 * Finding 5b: the zero page.  A 2048-page region read everywhere (zero
 * page PTEs), then 32 one-byte writes, one every 64 pages.  Ok when
 * exactly 32 pages are backed by memory of their own (pagemap: present,
 * not the zero page's PFN) — 35 pages of RSS growth at window 0 against
 * 515 at fixed:16 in issue 19.
 */
static int zero_page(void)
{
	const unsigned long pages = 2048;
	char *base = isolated_region(pages);
	volatile char sink = 0;
	uint64_t zero_pfn;
	unsigned long i, own = 0;
	long long copies;

	for (i = 0; i < pages; i++)
		sink += base[i * PAGE];
	zero_pfn = pagemap_entry(base) & PAGEMAP_PFN;
	copies = counter("cow_ahead_copy");
	for (i = 0; i < pages; i += 64)
		base[i * PAGE] = 1;
	copies = counter("cow_ahead_copy") - copies;
	for (i = 0; i < pages; i++) {
		uint64_t entry = pagemap_entry(base + i * PAGE);

		own += (entry & PAGEMAP_PRESENT) && (entry & PAGEMAP_PFN) != zero_pfn;
	}
	(void)sink;
	printf("{\"case\": \"zero_page\", \"ok\": %s, \"writes\": %lu, \"pages_with_memory\": %lu, "
	       "\"zero_pfn_seen\": %s, \"ahead_copies\": %lld}\n", own == pages / 64 ? "true" : "false",
	       pages / 64, own, zero_pfn ? "true" : "false", copies);
	return own != pages / 64;
}

/*
 * Finding 6: adaptive state must not outlive its VMA.  Under
 * vm.cow_ahead_policy=adaptive the child writes sequentially, following
 * the ramp (each fault lands on the page after the last window), until the
 * next expected page n is past page 256.  Then the VMA changes under the
 * ramp: "munmap" unmaps [0, n) so the VMA now starts at n; "mremap" moves
 * the whole VMA elsewhere.  The next write is at the page the old ramp
 * expects (n, at its new address for mremap).  A VMA with a new range
 * starts a fresh ramp: ok when that write copies nothing ahead (a stale
 * ramp would grow the window) and the data are intact.
 */
static int adaptive_split(int move)
{
	const unsigned long pages = 1024;
	char *base = isolated_region(pages), *now;
	unsigned long next = 0, i;
	long long copies = -1, before, faults[2] = { -1, -1 };
	int fds[2], status, ok;
	pid_t pid;

	for (i = 0; i < pages; i++)
		base[i * PAGE] = (char)(i % 100 + 1);
	if (pipe(fds))
		die("pipe");
	pid = fork();
	if (pid == 0) {
		int bad = 0;

		faults[0] = 0;	/* writes that faulted to get past page 256: 256 without a ramp */
		while (next < 256) {
			before = counter("cow_ahead_copy");
			base[next * PAGE] = 102;
			next += 1 + (counter("cow_ahead_copy") - before);
			faults[0]++;
		}
		now = base;
		if (move) {
			char *target = isolated_region(pages);	/* a free, aligned place to move to */

			now = mremap(base, pages * PAGE, pages * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, target);
			if (now == MAP_FAILED)
				die("mremap");
		} else if (munmap(base, next * PAGE)) {
			die("munmap");
		}
		before = counter("cow_ahead_copy");
		now[next * PAGE] = 103;
		copies = counter("cow_ahead_copy") - before;
		faults[1] = copies;
		if (write(fds[1], faults, sizeof(faults)) != sizeof(faults))
			die("write");
		for (i = next; i < pages; i++)	/* below next: written or copied ahead, either is right */
			bad += now[i * PAGE] != (i == next ? 103 : (char)(i % 100 + 1));
		_exit(bad ? 1 : 0);
	}
	if (read(fds[0], faults, sizeof(faults)) != sizeof(faults))
		die("read");
	copies = faults[1];
	status = wait_child(pid);
	ok = status == 0 && copies == 0;
	for (i = 0; i < pages; i++)
		ok &= base[i * PAGE] == (char)(i % 100 + 1);
	printf("{\"case\": \"adaptive_%s\", \"ok\": %s, \"ramp_faults_to_page_256\": %lld, "
	       "\"ahead_copies_after_change\": %lld, \"child_status\": %d}\n",
	       move ? "mremap" : "munmap", ok ? "true" : "false", faults[0], copies, status);
	return !ok;
}

int main(int argc, char **argv)
{
	const char *name = argc > 1 ? argv[1] : "";

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(name, "missing_table"))
		return missing_table();
	if (!strcmp(name, "thp_tail"))
		return thp_tail();
	if (!strcmp(name, "soft_dirty_copy"))
		return soft_dirty(0);
	if (!strcmp(name, "soft_dirty_reuse"))
		return soft_dirty(1);
	if (!strcmp(name, "oom"))
		return oom(0);
	if (!strcmp(name, "oom_large"))
		return oom(1);
	if (!strcmp(name, "ksm"))
		return ksm();
	if (!strcmp(name, "zero_page"))
		return zero_page();
	if (!strcmp(name, "adaptive_munmap"))
		return adaptive_split(0);
	if (!strcmp(name, "adaptive_mremap"))
		return adaptive_split(1);
	fprintf(stderr, "usage: issue19 missing_table|thp_tail|soft_dirty_copy|soft_dirty_reuse|oom|oom_large|ksm|zero_page|"
		"adaptive_munmap|adaptive_mremap\n");
	return 2;
}
