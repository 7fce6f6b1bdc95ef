/*
 * What it costs this machine to wake a process that waits on a Unix socket: one byte there and
 * back between two processes over a socketpair (as the daemon talks to a PAM worker, and a client
 * to any of the servers), the time of a round trip, with both processes on one CPU, on two CPUs,
 * and where the scheduler puts them. `wakeup SECONDS` prints
 * {"sameCpuUs":…,"acrossCpusUs":…,"unpinnedUs":…}, pinned to the first two CPUs it may use
 * (acrossCpusUs null when there is only one).
 *
 * On one CPU a round trip is two context switches. Across CPUs the waiting process's CPU has
 * usually gone idle, and waking an idle CPU is the expensive part: on a virtual machine whose
 * idle CPUs halt (no guest halt polling), the hypervisor has to run it again. Every hop a request
 * makes from one process to another pays this where CPUs are idle: saslauthd's requests make two
 * (client → saslauthd → client), pam-authservice's four (client → daemon → worker → daemon →
 * client).
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec time;
	clock_gettime(CLOCK_MONOTONIC, &time);
	return time.tv_sec + time.tv_nsec / 1e9;
}

/* The CPUs this process may use, as it started: the cases pin to the first two of them. */
static cpu_set_t allowed;

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	if (cpu < 0)
		set = allowed;
	else
		CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0) {
		perror("sched_setaffinity");
		exit(1);
	}
}

/* Mean µs of a round trip, the parent on `ours` and the echoing child on `theirs` (-1: unpinned). */
static double round_trip_us(int ours, int theirs, double seconds)
{
	int pair[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) {
		perror("socketpair");
		exit(1);
	}

	pid_t child = fork();
	if (child < 0) {
		perror("fork");
		exit(1);
	}
	if (child == 0) {
		close(pair[0]);
		pin(theirs);
		char byte;
		while (read(pair[1], &byte, 1) == 1 && write(pair[1], &byte, 1) == 1) {
		}
		_exit(0);
	}

	close(pair[1]);
	pin(ours);
	char byte = 'x';
	/* The first 1 000 are not counted: both processes get going and settle on their CPUs. */
	long trips = -1000;
	double started = 0, elapsed = 0;
	for (;; trips++) {
		if (write(pair[0], &byte, 1) != 1 || read(pair[0], &byte, 1) != 1) {
			perror("round trip");
			exit(1);
		}
		if (trips == 0)
			started = now();
		else if (trips > 0 && trips % 64 == 0 && (elapsed = now() - started) >= seconds)
			break;
	}
	close(pair[0]);
	waitpid(child, NULL, 0);

	/* Free to run where it could before, for the next case. */
	pin(-1);
	return elapsed / (double)trips * 1e6;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 0.5;
	if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
		perror("sched_getaffinity");
		return 1;
	}
	int first = -1, second = -1;
	for (int cpu = 0; cpu < CPU_SETSIZE && second < 0; cpu++) {
		if (!CPU_ISSET(cpu, &allowed))
			continue;
		if (first < 0)
			first = cpu;
		else
			second = cpu;
	}

	double same = round_trip_us(first, first, seconds);
	double across = second >= 0 ? round_trip_us(first, second, seconds) : -1;
	double unpinned = round_trip_us(-1, -1, seconds);
	if (across < 0)
		printf("{\"sameCpuUs\":%.1f,\"acrossCpusUs\":null,\"unpinnedUs\":%.1f}\n", same, unpinned);
	else
		printf("{\"sameCpuUs\":%.1f,\"acrossCpusUs\":%.1f,\"unpinnedUs\":%.1f}\n", same, across, unpinned);
	return 0;
}
