/*
 * The load generator's one-request-per-connection mode, in C: connect, send one request, read the
 * answer, close, as x2gobroker's own client asks. Its JSON line is load.mjs's (run.mjs uses this
 * for `mode: 'oneshot'` when it is built). In Node.js, a client connection cost the load generator
 * about 40 µs of CPU, so it did only 2.4 times the daemon's best rate against a server that answers
 * at once, and took that CPU from the program measured on 2 cores; here it costs a few µs.
 *
 *   oneshot-load SOCKET line|sasl CLIENTS SECONDS COUNT WRONG_SHARE USERS SERVICE TIMEOUT_MS
 *
 * SECONDS > 0: each client starts requests until then; else each client sends COUNT requests.
 * Requests and answers as in load.mjs: user u<n % USERS>, its password pw-<n>-secret, or, for a
 * WRONG_SHARE of them spread by a low-discrepancy sequence, wrong-<n>; every answer is checked.
 * A full listen backlog (EAGAIN) is retried after 1, 2, then every 4 ms, the latency counted from the
 * first attempt, as load.mjs does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum state { START, RETRY, WRITING, READING, FINISHED };

struct client {
	enum state state;
	int fd;
	long sent;
	int attempt;
	int expect_ok;
	double started, wake_at;
	size_t out_length, out_done, in_length;
	uint8_t out[1024], in[1024];
};

static struct sockaddr_un address;
static int sasl, users, epoll_fd;
static long count;
static double wrong_share, timeout_ms, run_until;
static const char *service;
static long sequence, done, mismatches, errors, connect_retries;
static double *latencies;
static long latency_capacity;
static struct { const char *expected; char got[64]; } mismatch_samples[5];
static int mismatch_sample_count;

/* The error kinds seen, each with its count, for `errorKinds`. */
static struct { char kind[64]; long count; } kinds[32];
static int kind_count;

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static void error_kind(const char *kind)
{
	errors++;
	for (int i = 0; i < kind_count; i++) {
		if (strcmp(kinds[i].kind, kind) == 0) {
			kinds[i].count++;
			return;
		}
	}
	if (kind_count < 32) {
		snprintf(kinds[kind_count].kind, sizeof kinds[kind_count].kind, "%s", kind);
		kinds[kind_count++].count = 1;
	}
}

static void errno_kind(const char *what, int number)
{
	char kind[64];
	snprintf(kind, sizeof kind, "%s %s", what, strerrorname_np(number) ? strerrorname_np(number) : "?");
	error_kind(kind);
}

static void record(struct client *client, const char *answer)
{
	if (done == latency_capacity) {
		latency_capacity = latency_capacity ? latency_capacity * 2 : 65536;
		latencies = realloc(latencies, (size_t)latency_capacity * sizeof *latencies);
		if (!latencies)
			abort();
	}
	latencies[done++] = now_ms() - client->started;
	if (strcmp(answer, client->expect_ok ? "ok" : "fail") != 0) {
		mismatches++;
		if (mismatch_sample_count < 5) {
			mismatch_samples[mismatch_sample_count].expected = client->expect_ok ? "ok" : "fail";
			snprintf(mismatch_samples[mismatch_sample_count++].got, 64, "%.40s", answer);
		}
	}
}

static void put_field(struct client *client, const char *text)
{
	size_t length = strlen(text);
	client->out[client->out_length++] = (uint8_t)(length >> 8);
	client->out[client->out_length++] = (uint8_t)length;
	memcpy(client->out + client->out_length, text, length);
	client->out_length += length;
}

/* The next request into client->out, as load.mjs's nextRequest() and encode(). */
static void next_request(struct client *client)
{
	long number = sequence++;
	long index = number % users;
	int wrong = wrong_share > 0 && fmod((double)(number + 1) * 0.61803398875, 1.0) < wrong_share;
	char user[32], password[48];
	snprintf(user, sizeof user, "u%ld", index);
	if (wrong)
		snprintf(password, sizeof password, "wrong-%ld", index);
	else
		snprintf(password, sizeof password, "pw-%ld-secret", index);
	client->expect_ok = !wrong;
	client->out_length = client->out_done = client->in_length = 0;
	if (sasl) {
		put_field(client, user);
		put_field(client, password);
		put_field(client, service);
		put_field(client, "");
	} else {
		client->out_length = (size_t)snprintf((char *)client->out, sizeof client->out, "%s\r%s\r%s\n", user, password, service);
	}
}

static int more(const struct client *client)
{
	return run_until > 0 ? now_ms() < run_until : client->sent < count;
}

static void close_client(struct client *client)
{
	if (client->fd >= 0) {
		close(client->fd);
		client->fd = -1;
	}
	client->state = START;
}

/*
 * Write what is left of the request, then wait for the answer, or for room to write the rest (a
 * request of this size nearly always goes out at once). `op`: EPOLL_CTL_ADD for a socket just
 * connected, EPOLL_CTL_MOD for one epoll already watches.
 */
static void send_rest(struct client *client, int op)
{
	ssize_t put = write(client->fd, client->out + client->out_done, client->out_length - client->out_done);
	if (put < 0 && errno != EAGAIN) {
		errno_kind("socket", errno);
		close_client(client);
		return;
	}
	if (put > 0)
		client->out_done += (size_t)put;
	enum state next = client->out_done == client->out_length ? READING : WRITING;
	if (op == EPOLL_CTL_MOD && next == client->state)
		return;
	client->state = next;
	struct epoll_event event = {.events = next == READING ? EPOLLIN : EPOLLOUT | EPOLLIN, .data.ptr = client};
	if (epoll_ctl(epoll_fd, op, client->fd, &event) != 0)
		abort();
}

/* Connect (again): on to WRITING, to RETRY while the backlog is full, or the request is lost. */
static void try_connect(struct client *client)
{
	client->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (client->fd < 0) {
		errno_kind("connect", errno);
		client->state = START;
		return;
	}
	if (connect(client->fd, (struct sockaddr *)&address, sizeof address) != 0) {
		int number = errno;
		close(client->fd);
		client->fd = -1;
		if (number == EAGAIN && now_ms() < client->started + timeout_ms) {
			connect_retries++;
			client->wake_at = now_ms() + (client->attempt < 2 ? 1 << client->attempt : 4);
			client->attempt++;
			client->state = RETRY;
			return;
		}
		if (number == EAGAIN)
			error_kind("connect EAGAIN until timeout");
		else
			errno_kind("connect", number);
		client->state = START;
		return;
	}
	send_rest(client, EPOLL_CTL_ADD);
}

static void start(struct client *client)
{
	while (client->state == START) {
		if (!more(client)) {
			client->state = FINISHED;
			return;
		}
		next_request(client);
		client->sent++;
		client->started = now_ms();
		client->attempt = 0;
		try_connect(client);
	}
}

/* What the socket is ready for: the request goes out, then the answer comes in. */
static void ready(struct client *client, uint32_t events)
{
	if (client->state == WRITING) {
		send_rest(client, EPOLL_CTL_MOD);
		return;
	}
	if (client->state != READING || !(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	ssize_t got = read(client->fd, client->in + client->in_length, sizeof client->in - client->in_length - 1);
	if (got < 0) {
		if (errno != EAGAIN) {
			errno_kind("socket", errno);
			close_client(client);
		}
		return;
	}
	if (got == 0) {
		error_kind("closed without an answer");
		close_client(client);
		return;
	}
	client->in_length += (size_t)got;
	char answer[512];
	if (sasl) {
		if (client->in_length < 2)
			return;
		size_t length = ((size_t)client->in[0] << 8) | client->in[1];
		if (client->in_length < 2 + length && client->in_length < sizeof client->in - 1)
			return;
		if (length > client->in_length - 2)
			length = client->in_length - 2;
		if (length >= 2 && memcmp(client->in + 2, "OK", 2) == 0)
			strcpy(answer, "ok");
		else if (length >= 2 && memcmp(client->in + 2, "NO", 2) == 0)
			strcpy(answer, "fail");
		else
			snprintf(answer, sizeof answer, "%.*s", (int)(length < 40 ? length : 40), (const char *)client->in + 2);
	} else {
		uint8_t *end = memchr(client->in, '\n', client->in_length);
		if (!end) {
			if (client->in_length < sizeof client->in - 1)
				return;
			end = client->in + client->in_length;
		}
		snprintf(answer, sizeof answer, "%.*s", (int)(end - client->in), (const char *)client->in);
	}
	record(client, answer);
	close_client(client);
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static void print_quantile(const char *name, double q)
{
	if (done == 0) {
		printf("\"%s\":null,", name);
		return;
	}
	long at = (long)floor(q * (double)done);
	printf("\"%s\":%.3f,", name, latencies[at < done - 1 ? at : done - 1]);
}

int main(int argc, char **argv)
{
	if (argc != 10) {
		fprintf(stderr, "usage: oneshot-load SOCKET line|sasl CLIENTS SECONDS COUNT WRONG_SHARE USERS SERVICE TIMEOUT_MS\n");
		return 2;
	}
	address.sun_family = AF_UNIX;
	snprintf(address.sun_path, sizeof address.sun_path, "%s", argv[1]);
	sasl = strcmp(argv[2], "sasl") == 0;
	int clients = atoi(argv[3]);
	double seconds = atof(argv[4]);
	count = atol(argv[5]);
	wrong_share = atof(argv[6]);
	users = atoi(argv[7]) > 0 ? atoi(argv[7]) : 1000;
	service = argv[8];
	timeout_ms = atof(argv[9]);
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	struct client *all = calloc((size_t)clients, sizeof *all);
	if (epoll_fd < 0 || !all)
		return 1;

	double begun = now_ms();
	run_until = seconds > 0 ? begun + seconds * 1000 : 0;
	/* Never outlive the run by much, whatever the peer does (load.mjs's hard stop). */
	double hard_stop = begun + (seconds > 0 ? seconds * 1000 : 0) + timeout_ms + 2000;
	for (int i = 0; i < clients; i++) {
		all[i].fd = -1;
		all[i].state = START;
		start(&all[i]);
	}

	struct epoll_event events[256];
	for (;;) {
		int running = 0;
		double now = now_ms(), wake = now + 10;
		for (int i = 0; i < clients; i++) {
			struct client *client = &all[i];
			if (client->state == FINISHED)
				continue;
			running = 1;
			if ((client->state == WRITING || client->state == READING) && now > client->started + timeout_ms) {
				error_kind("no answer in time");
				close_client(client);
				start(client);
			} else if (client->state == RETRY && now >= client->wake_at) {
				try_connect(client);
				start(client);
			}
			if (client->state == RETRY && client->wake_at < wake)
				wake = client->wake_at;
		}
		if (!running)
			break;
		if (now > hard_stop) {
			error_kind("load generator stopped at its hard limit");
			break;
		}
		int ready_count = epoll_wait(epoll_fd, events, 256, (int)ceil(wake - now));
		for (int i = 0; i < ready_count; i++) {
			struct client *client = events[i].data.ptr;
			ready(client, events[i].events);
			start(client);
		}
	}

	double elapsed = (now_ms() - begun) / 1000;
	struct rusage usage;
	getrusage(RUSAGE_SELF, &usage);
	double cpu = (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 + (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
	qsort(latencies, (size_t)done, sizeof *latencies, by_value);
	printf("{\"done\":%ld,\"seconds\":%.3f,\"rate\":%ld,", done, elapsed, lround((double)done / elapsed));
	print_quantile("p50Ms", 0.5);
	print_quantile("p99Ms", 0.99);
	if (done > 0)
		printf("\"maxMs\":%.3f,", latencies[done - 1]);
	else
		printf("\"maxMs\":null,");
	printf("\"mismatches\":%ld,\"mismatchSamples\":[", mismatches);
	for (int i = 0; i < mismatch_sample_count; i++) {
		/* The answer as the peer gave it, kept to printable ASCII: it goes into JSON. */
		for (char *c = mismatch_samples[i].got; *c; c++)
			if (*c < 0x20 || *c > 0x7e || *c == '"' || *c == '\\')
				*c = '?';
		printf("%s{\"expected\":\"%s\",\"got\":\"%s\"}", i ? "," : "", mismatch_samples[i].expected, mismatch_samples[i].got);
	}
	printf("],\"errors\":%ld,\"errorKinds\":{", errors);
	for (int i = 0; i < kind_count; i++)
		printf("%s\"%s\":%ld", i ? "," : "", kinds[i].kind, kinds[i].count);
	printf("},\"connectRetries\":%ld,\"loadCpuCores\":%.2f,\"generator\":\"c\"}\n", connect_retries, cpu / elapsed);
	return 0;
}
