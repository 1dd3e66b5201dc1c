/*
 * probe: a small memory program driven line by line on stdin, for the folio
 * experiments of cowahead.real.folio_probes.
 *
 * Each command does one thing to anonymous memory and replies with one line,
 * "ok key=value ..." or "err message". Memory commands report the minor and
 * major faults (getrusage) taken inside their loop and nothing else: the
 * rusage structs are written before the first reading, so a COW fault on the
 * probe's own stack after fork is never counted. The driver (Python) reads
 * /proc/PID/pagemap and /proc/kpageflags of this process between commands.
 *
 *   map LEN ALIGN OFFSET   map LEN bytes at an ALIGN-aligned address plus OFFSET,
 *                          between PROT_NONE guards so that the VMA never merges
 *   munmap ADDR LEN
 *   madvise ADDR LEN ADVICE
 *   write ADDR LEN VALUE   store byte VALUE at offset 0 of every 4 KiB page
 *   read ADDR LEN          load offset 0 of every page; sum= their sum
 *   fork                   the child serves "child ..." commands, relayed by the parent
 *   child COMMAND ...      run COMMAND in the child, reply with its reply
 *   exitchild              the child exits; replied once it is reaped (its mm is gone)
 *   prctl OPTION ARG2 [ARG3]  prctl(OPTION, ARG2, ARG3, 0, 0)
 *   exec                   execv("/proc/self/exe"): replies "ready ..." from the new image
 *   quit
 *
 * Numbers are decimal or 0x-hex. Built by the driver with gcc -O1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL
#define LINE 512

static int child_in = -1, child_out = -1; /* pipes to and from the child, in the parent */
static pid_t child_pid;

/* One line from fd, without stdio: a forked child must not inherit buffered input. */
static int read_line(int fd, char *buf, size_t size)
{
	size_t n = 0;
	while (n + 1 < size) {
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r <= 0)
			return -1;
		if (c == '\n')
			break;
		buf[n++] = c;
	}
	buf[n] = 0;
	return (int)n;
}

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
	char out[LINE];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(out, sizeof(out) - 1, fmt, ap);
	va_end(ap);
	out[n++] = '\n';
	if (write(1, out, n) != n)
		_exit(3);
}

static uint64_t num(const char *s)
{
	return s ? strtoull(s, NULL, 0) : 0;
}

struct faults {
	long minflt, majflt;
};

/* rusage before and after a loop; both structs are written before the first call (see above). */
static struct rusage ru_before, ru_after;

static void faults_start(void)
{
	memset(&ru_before, 0, sizeof(ru_before));
	memset(&ru_after, 0, sizeof(ru_after));
	getrusage(RUSAGE_SELF, &ru_before);
}

static struct faults faults_stop(void)
{
	getrusage(RUSAGE_SELF, &ru_after);
	struct faults f = { ru_after.ru_minflt - ru_before.ru_minflt, ru_after.ru_majflt - ru_before.ru_majflt };
	return f;
}

static void cmd_map(char **arg)
{
	uint64_t len = num(arg[1]), align = num(arg[2]), offset = num(arg[3]);
	if (align < PAGE)
		align = PAGE;
	/* Reserve guard + room + guard as PROT_NONE, then map the region read-write inside it:
	 * the PROT_NONE neighbours have other flags, so the region stays one VMA of its own. */
	uint64_t room = len + offset + 2 * align + 2 * PAGE;
	char *base = mmap(NULL, room, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		reply("err mmap reserve: %s", strerror(errno));
		return;
	}
	uint64_t start = ((uint64_t)base + PAGE + align - 1) / align * align + offset;
	char *addr = mmap((void *)start, len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
	if (addr == MAP_FAILED) {
		reply("err mmap: %s", strerror(errno));
		return;
	}
	reply("ok addr=0x%lx", (unsigned long)addr);
}

static void cmd_munmap(char **arg)
{
	int r = munmap((void *)num(arg[1]), num(arg[2]));
	reply("ok ret=%d errno=%d", r, r ? errno : 0);
}

static void cmd_madvise(char **arg)
{
	faults_start();
	int r = madvise((void *)num(arg[1]), num(arg[2]), (int)num(arg[3]));
	int err = r ? errno : 0;
	struct faults f = faults_stop();
	reply("ok ret=%d errno=%d minflt=%ld majflt=%ld", r, err, f.minflt, f.majflt);
}

static void cmd_write(char **arg)
{
	volatile char *p = (volatile char *)num(arg[1]);
	uint64_t pages = num(arg[2]) / PAGE;
	char value = (char)num(arg[3]);
	faults_start();
	for (uint64_t i = 0; i < pages; i++)
		p[i * PAGE] = value;
	struct faults f = faults_stop();
	reply("ok minflt=%ld majflt=%ld", f.minflt, f.majflt);
}

static void cmd_read(char **arg)
{
	volatile char *p = (volatile char *)num(arg[1]);
	uint64_t pages = num(arg[2]) / PAGE, sum = 0;
	faults_start();
	for (uint64_t i = 0; i < pages; i++)
		sum += (unsigned char)p[i * PAGE];
	struct faults f = faults_stop();
	reply("ok minflt=%ld majflt=%ld sum=%lu", f.minflt, f.majflt, (unsigned long)sum);
}

static void serve(void);

static void cmd_fork(void)
{
	int to_child[2], from_child[2];
	if (child_pid) {
		reply("err a child is already running");
		return;
	}
	if (pipe(to_child) || pipe(from_child)) {
		reply("err pipe: %s", strerror(errno));
		return;
	}
	pid_t pid = fork();
	if (pid < 0) {
		reply("err fork: %s", strerror(errno));
		return;
	}
	if (pid == 0) {
		/* The child is the same interpreter on the relay pipes; exec keeps them too. */
		dup2(to_child[0], 0);
		dup2(from_child[1], 1);
		close(to_child[0]);
		close(to_child[1]);
		close(from_child[0]);
		close(from_child[1]);
		child_pid = 0;
		child_in = child_out = -1;
		serve();
		_exit(0);
	}
	close(to_child[0]);
	close(from_child[1]);
	child_in = to_child[1];
	child_out = from_child[0];
	child_pid = pid;
	reply("ok child=%d", pid);
}

static void cmd_child(const char *line)
{
	char buf[LINE];
	if (!child_pid) {
		reply("err no child");
		return;
	}
	const char *rest = line + strlen("child");
	while (*rest == ' ')
		rest++;
	size_t n = strlen(rest);
	if (write(child_in, rest, n) != (ssize_t)n || write(child_in, "\n", 1) != 1) {
		reply("err relay: %s", strerror(errno));
		return;
	}
	if (read_line(child_out, buf, sizeof(buf)) < 0) {
		reply("err the child is gone");
		return;
	}
	reply("%s", buf);
}

static void cmd_exitchild(void)
{
	int status = 0;
	if (!child_pid) {
		reply("err no child");
		return;
	}
	if (write(child_in, "quit\n", 5) != 5) {
		reply("err relay: %s", strerror(errno));
		return;
	}
	waitpid(child_pid, &status, 0);
	close(child_in);
	close(child_out);
	child_pid = 0;
	reply("ok status=%d", status);
}

static void cmd_prctl(char **arg)
{
	int r = prctl((int)num(arg[1]), (unsigned long)num(arg[2]), (unsigned long)num(arg[3]), 0UL, 0UL);
	reply("ok ret=%d errno=%d", r, r < 0 ? errno : 0);
}

static void cmd_exec(void)
{
	char *argv[] = { "probe", NULL };
	execv("/proc/self/exe", argv);
	reply("err exec: %s", strerror(errno));
}

static void serve(void)
{
	char line[LINE], copy[LINE];
	char *arg[8];
	for (;;) {
		if (read_line(0, line, sizeof(line)) < 0)
			return;
		memcpy(copy, line, sizeof(copy));
		int n = 0;
		for (char *tok = strtok(copy, " "); tok && n < 7; tok = strtok(NULL, " "))
			arg[n++] = tok;
		arg[n] = NULL;
		if (n == 0)
			continue;
		if (!strcmp(arg[0], "map") && n == 4)
			cmd_map(arg);
		else if (!strcmp(arg[0], "munmap") && n == 3)
			cmd_munmap(arg);
		else if (!strcmp(arg[0], "madvise") && n == 4)
			cmd_madvise(arg);
		else if (!strcmp(arg[0], "write") && n == 4)
			cmd_write(arg);
		else if (!strcmp(arg[0], "read") && n == 3)
			cmd_read(arg);
		else if (!strcmp(arg[0], "fork"))
			cmd_fork();
		else if (!strcmp(arg[0], "child"))
			cmd_child(line);
		else if (!strcmp(arg[0], "exitchild"))
			cmd_exitchild();
		else if (!strcmp(arg[0], "prctl") && (n == 3 || n == 4))
			cmd_prctl(arg);
		else if (!strcmp(arg[0], "exec"))
			cmd_exec();
		else if (!strcmp(arg[0], "quit")) {
			if (child_pid && write(child_in, "quit\n", 5) == 5)
				waitpid(child_pid, NULL, 0);
			return;
		} else
			reply("err bad command: %s", line);
	}
}

int main(void)
{
	/* PR_GET_THP_DISABLE: whether THP is disabled for this process (inherited, kept over exec). */
	reply("ready pid=%d thp_disable=%d", getpid(), prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
	serve();
	return 0;
}
