/*
 * pam-authservice-worker: runs PAM checks for pam-authserviced, one at a time.
 *
 * Why a process of its own: libpam is blocking and many modules are not thread-safe (static
 * buffers, getpwnam, signal handlers, fork); a module that crashes, hangs or leaks must not take
 * the daemon with it; and whatever a module leaves in memory dies with a process the daemon can
 * kill. The daemon pools and supervises these workers, as Dovecot does with its auth workers.
 *
 * Framing (src/worker-protocol.ts is the other side; change both together): every number is
 * little-endian, every frame is a u32 payload length and the payload, so no delimiter is ever
 * searched for inside a secret.
 *   request  = 4 fields, each u32 length + bytes: service, user, password, ruser
 *   response = i32 pam code, u8 step, u32 delay (µs), u32 length + pam_strerror text,
 *              u16 message count, then per message u8 style + u32 length + text
 *
 * The check: pam_start → pam_authenticate → pam_acct_mgmt → pam_end, "ok" only when both pass.
 * The failure delay a module asks for (pam_unix: 2 s) is not slept here: PAM_FAIL_DELAY hands it
 * to us, we report it, and the daemon holds the answer back on a timer while this worker goes on.
 *
 * Exit codes: 0 at EOF on stdin (the daemon is done with us), 3 for a malformed frame, 4 when
 * the answer cannot be written, 5 when the set-up fails. Every exit but 0 writes one fixed line
 * to stderr, which the daemon logs: a fixed text, so no request byte can ever reach a log.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/prctl.h>
#include <linux/close_range.h>
#include <sys/resource.h>
#include <unistd.h>

#include <security/pam_appl.h>

#define MAX_PAYLOAD 65536        /* as maxRequestPayloadBytes in src/worker-protocol.ts */
#define MAX_MESSAGES 32          /* messages kept per check, for the log */
#define MAX_MESSAGE_BYTES 1024   /* each cut to this; it is log text, not data */

enum step { STEP_NONE, STEP_START, STEP_SET_ITEM, STEP_AUTHENTICATE, STEP_ACCT_MGMT, STEP_REQUEST };

struct message {
	uint8_t style;
	uint32_t length;
	char text[MAX_MESSAGE_BYTES];
};

/* Everything one check knows; the conversation and the delay callback reach it by appdata_ptr. */
struct check {
	const char *user;
	const char *password;
	unsigned int delay_us;
	uint16_t message_count;
	struct message messages[MAX_MESSAGES];
};

/* A fatal error: one fixed line for the daemon's log, then out. _exit, not exit: nothing of ours
 * needs flushing, and atexit handlers of PAM modules must not run half-way through a check. */
static _Noreturn void die(int code, const char *why)
{
	char line[160];
	int length = snprintf(line, sizeof line, "pam-authservice-worker: %s\n", why);
	if (length > 0 && write(STDERR_FILENO, line, strnlen(line, sizeof line)) < 0) {
		/* Nobody to tell: the exit code says it all. */
	}
	_exit(code);
}

static int read_full(int fd, void *buffer, size_t length)
{
	size_t done = 0;
	while (done < length) {
		ssize_t got = read(fd, (char *)buffer + done, length - done);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return done == 0 && got == 0 ? 0 : -1; /* 0: clean EOF before the first byte */
		done += (size_t)got;
	}
	return 1;
}

static void write_full(int fd, const void *buffer, size_t length)
{
	size_t done = 0;
	while (done < length) {
		ssize_t put = write(fd, (const char *)buffer + done, length - done);
		if (put < 0 && errno == EINTR)
			continue;
		if (put <= 0)
			die(4, "cannot write the answer (the daemon went away?)");
		done += (size_t)put;
	}
}

static void record_message(struct check *check, int style, const char *text)
{
	if (check->message_count >= MAX_MESSAGES)
		return;
	struct message *message = &check->messages[check->message_count++];
	size_t length = text ? strnlen(text, MAX_MESSAGE_BYTES) : 0;
	message->style = (uint8_t)style;
	message->length = (uint32_t)length;
	memcpy(message->text, text ? text : "", length);
}

static void free_replies(struct pam_response *replies, int count)
{
	for (int index = 0; index < count; index++) {
		if (replies[index].resp) {
			explicit_bzero(replies[index].resp, strlen(replies[index].resp));
			free(replies[index].resp);
		}
	}
	free(replies);
}

/*
 * Any number of messages, one reply each, allocated as PAM frees them (the array and each
 * string with free()). The password answers an echo-off prompt and nothing else: an echo-on
 * prompt gets the user name, info and error text are kept for the log.
 */
static int converse(int count, const struct pam_message **messages, struct pam_response **out, void *appdata)
{
	struct check *check = appdata;
	if (count <= 0 || count > PAM_MAX_NUM_MSG)
		return PAM_CONV_ERR;

	/* Some modules (pam_matrix among them) pass no reply pointer with messages that need no
	 * reply: keep the text, and refuse only a prompt that could not be answered. */
	if (!out) {
		for (int index = 0; index < count; index++) {
			int style = messages[index]->msg_style;
			if (style != PAM_ERROR_MSG && style != PAM_TEXT_INFO)
				return PAM_CONV_ERR;
			record_message(check, style, messages[index]->msg);
		}
		return PAM_SUCCESS;
	}

	struct pam_response *replies = calloc((size_t)count, sizeof *replies);
	if (!replies)
		return PAM_BUF_ERR;

	for (int index = 0; index < count; index++) {
		const struct pam_message *message = messages[index];
		record_message(check, message->msg_style, message->msg);
		switch (message->msg_style) {
		case PAM_PROMPT_ECHO_OFF:
			replies[index].resp = strdup(check->password);
			break;
		case PAM_PROMPT_ECHO_ON:
			replies[index].resp = strdup(check->user);
			break;
		case PAM_ERROR_MSG:
		case PAM_TEXT_INFO:
			continue;
		default:
			free_replies(replies, count);
			return PAM_CONV_ERR;
		}
		if (!replies[index].resp) {
			free_replies(replies, count);
			return PAM_BUF_ERR;
		}
	}

	*out = replies;
	return PAM_SUCCESS;
}

/*
 * Set as PAM_FAIL_DELAY, libpam calls this instead of sleeping the failure delay itself: a worker
 * that slept would be a worker taken from the pool by every wrong password. libpam passes it the
 * conversation's appdata_ptr, so it is the same struct check. libpam calls it after a success
 * too (with a delay it would not have slept): only a failure's delay is kept.
 */
static void remember_delay(int status, unsigned int delay_us, void *appdata)
{
	struct check *check = appdata;
	if (status != PAM_SUCCESS)
		check->delay_us = delay_us;
}

/* The next field of a request payload, copied NUL-terminated into its own buffer. */
static char *take_field(const uint8_t *payload, uint32_t payload_length, uint32_t *offset, uint32_t *length)
{
	uint32_t field_length;
	if (payload_length - *offset < 4)
		die(3, "protocol error: fewer than 4 fields in a request");
	memcpy(&field_length, payload + *offset, 4);
	field_length = le32toh(field_length);
	*offset += 4;
	if (payload_length - *offset < field_length)
		die(3, "protocol error: a request field overruns its frame");
	char *field = malloc((size_t)field_length + 1);
	if (!field)
		die(5, "out of memory");
	memcpy(field, payload + *offset, field_length);
	field[field_length] = '\0';
	*offset += field_length;
	*length = field_length;
	return field;
}

static void append(uint8_t *frame, size_t *at, const void *bytes, size_t length)
{
	memcpy(frame + *at, bytes, length);
	*at += length;
}

static void answer(int code, enum step step, const char *text, const struct check *check)
{
	static uint8_t frame[4 + 4 + 1 + 4 + 4 + 256 + 2 + MAX_MESSAGES * (1 + 4 + MAX_MESSAGE_BYTES)];
	size_t at = 4;
	size_t text_length = strnlen(text, 256);
	int32_t pam_code = (int32_t)htole32((uint32_t)code);
	uint8_t step_byte = (uint8_t)step;
	uint32_t delay = htole32(code == PAM_SUCCESS ? 0 : check->delay_us);
	uint32_t length = htole32((uint32_t)text_length);
	uint16_t count = htole16(check->message_count);

	append(frame, &at, &pam_code, 4);
	append(frame, &at, &step_byte, 1);
	append(frame, &at, &delay, 4);
	append(frame, &at, &length, 4);
	append(frame, &at, text, text_length);
	append(frame, &at, &count, 2);
	for (uint16_t index = 0; index < check->message_count; index++) {
		const struct message *message = &check->messages[index];
		uint32_t message_length = htole32(message->length);
		append(frame, &at, &message->style, 1);
		append(frame, &at, &message_length, 4);
		append(frame, &at, message->text, message->length);
	}

	uint32_t payload_length = htole32((uint32_t)(at - 4));
	memcpy(frame, &payload_length, 4);
	write_full(STDOUT_FILENO, frame, at);
}

/*
 * libpam loads a service's modules at pam_start and unloads them at pam_end: most of a check's
 * time on a simple stack (the benchmark measured 10 700 checks a second in-process, 53 700 with the
 * modules kept loaded). So the first check of each service opens one more handle and keeps it
 * until the worker exits: the modules' reference count never falls to zero, and later pam_start
 * calls find them loaded. The stack is still read afresh at every pam_start; a module upgraded on
 * disk is picked up when the worker is replaced (maxChecksPerWorker). No check runs on the pin.
 */
#define MAX_PINNED_SERVICES 16

static void pin_modules(const char *service)
{
	static struct {
		char name[256];
		pam_handle_t *pamh;
	} pinned[MAX_PINNED_SERVICES];
	static int count;
	static const struct pam_conv silent = {NULL, NULL};

	for (int index = 0; index < count; index++)
		if (strcmp(pinned[index].name, service) == 0)
			return;
	if (count == MAX_PINNED_SERVICES || strlen(service) >= sizeof pinned[0].name)
		return;
	if (pam_start(service, NULL, &silent, &pinned[count].pamh) != PAM_SUCCESS)
		return;
	strcpy(pinned[count].name, service);
	count++;
}

static void run_check(uint8_t *payload, uint32_t payload_length)
{
	static struct check check;
	uint32_t offset = 0, service_length, user_length, password_length, ruser_length;
	char *service = take_field(payload, payload_length, &offset, &service_length);
	char *user = take_field(payload, payload_length, &offset, &user_length);
	char *password = take_field(payload, payload_length, &offset, &password_length);
	char *ruser = take_field(payload, payload_length, &offset, &ruser_length);
	if (offset != payload_length)
		die(3, "protocol error: more than 4 fields in a request");
	explicit_bzero(payload, payload_length);

	memset(&check, 0, sizeof check);
	check.user = user;
	check.password = password;

	/* PAM takes C strings: a NUL inside a field would cut it, so such a field is refused. */
	if (strlen(service) != service_length || strlen(user) != user_length || strlen(password) != password_length || strlen(ruser) != ruser_length) {
		answer(PAM_AUTH_ERR, STEP_REQUEST, "field contains a NUL byte", &check);
		goto wipe;
	}

	pin_modules(service);
	const struct pam_conv conversation = {converse, &check};
	pam_handle_t *pamh = NULL;
	int code = pam_start(service, user, &conversation, &pamh);
	if (code != PAM_SUCCESS) {
		answer(code, STEP_START, "pam_start failed", &check);
		goto wipe;
	}

	enum step step = STEP_SET_ITEM;
	if ((ruser_length == 0 || (code = pam_set_item(pamh, PAM_RUSER, ruser)) == PAM_SUCCESS)
	    && (code = pam_set_item(pamh, PAM_FAIL_DELAY, (const void *)remember_delay)) == PAM_SUCCESS) {
		step = STEP_AUTHENTICATE;
		code = pam_authenticate(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
		if (code == PAM_SUCCESS) {
			step = STEP_ACCT_MGMT;
			/* PAM_NEW_AUTHTOK_REQD (an expired password) is a failure too: nobody can change it here. */
			code = pam_acct_mgmt(pamh, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
		}
	}

	answer(code, code == PAM_SUCCESS ? STEP_NONE : step, pam_strerror(pamh, code), &check);
	pam_end(pamh, code);

wipe:
	explicit_bzero(password, password_length);
	free(service);
	free(user);
	free(password);
	free(ruser);
	explicit_bzero(&check, sizeof check);
}

int main(void)
{
	static uint8_t payload[MAX_PAYLOAD];
	pid_t parent = getppid();

	/* Die with the daemon, even if it is killed: a worker outliving it would hold nothing useful. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
		die(5, "cannot set PR_SET_PDEATHSIG");
	/* The parent may have died before the prctl, which then never fires: we were re-parented. */
	if (getppid() != parent)
		die(5, "the parent died before the worker started");
	/* No core file, and no ptrace by other processes of our uid: a password may be in memory. */
	struct rlimit no_core = {0, 0};
	if (setrlimit(RLIMIT_CORE, &no_core) != 0 || prctl(PR_SET_DUMPABLE, 0) != 0)
		die(5, "cannot forbid core dumps");
	/* A write to a daemon that went away fails with EPIPE instead of killing us mid-check. */
	signal(SIGPIPE, SIG_IGN);
	/* SCHED_BATCH: the same share of the CPU (same nice value), but a worker woken by a request no
	 * longer preempts the daemon's event loop on its core (one request per connection, 8 clients:
	 * 25% more checks a second in the benchmark). What a module starts (pam_exec) inherits it. Not
	 * a realtime policy, so RestrictRealtime= allows it; if refused, we run as we are. */
	struct sched_param no_priority = {0};
	(void)sched_setscheduler(0, SCHED_BATCH, &no_priority);
	/* Nothing the daemon holds may reach the PAM modules we load or the programs they run (pam_exec):
	 * Node opens its own descriptors close-on-exec, but not the listening socket systemd passed it
	 * as fd 3. A kernel before 5.9 has no close_range: close them one by one. */
	if (close_range(3, ~0U, 0) != 0) {
		long open_max = sysconf(_SC_OPEN_MAX);
		for (long fd = 3; fd < (open_max > 0 && open_max < 65536 ? open_max : 65536); fd++)
			close((int)fd);
	}

	for (;;) {
		uint32_t payload_length;
		int got = read_full(STDIN_FILENO, &payload_length, 4);
		if (got == 0)
			return 0;
		if (got < 0)
			die(3, "protocol error: stdin ended or failed inside a frame header");
		payload_length = le32toh(payload_length);
		if (payload_length > MAX_PAYLOAD)
			die(3, "protocol error: request frame over 65536 bytes");
		if (read_full(STDIN_FILENO, payload, payload_length) != 1)
			die(3, "protocol error: stdin ended or failed inside a frame");
		run_check(payload, payload_length);
	}
}
