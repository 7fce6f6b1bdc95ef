/*
 * The limit: pam_start → pam_authenticate → pam_acct_mgmt → pam_end in a loop, in-process, on the
 * same PAM stack as the daemons. `pam-loop SERVICE USER PASSWORD SECONDS THREADS [pin]` prints
 * {"checks":N,"seconds":S,"rate":R}. Only for the benchmark: a password on argv is fine here.
 *
 * With `pin`, one more PAM handle is opened first and never ended: libpam then keeps the stack's
 * modules loaded, where otherwise every pam_end unloads them and every pam_start loads them again
 * (dlopen, relocations, mmap). Two threads get part of that for free, each keeping the modules
 * loaded for the other.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <security/pam_appl.h>

static const char *service, *user, *password;
static double seconds;

static int converse(int count, const struct pam_message **messages, struct pam_response **out, void *data)
{
	(void)data;
	if (!out)
		return PAM_SUCCESS;
	struct pam_response *replies = calloc((size_t)count, sizeof *replies);
	for (int index = 0; index < count; index++)
		if (messages[index]->msg_style == PAM_PROMPT_ECHO_OFF)
			replies[index].resp = strdup(password);
	*out = replies;
	return PAM_SUCCESS;
}

static double now(void)
{
	struct timespec time;
	clock_gettime(CLOCK_MONOTONIC, &time);
	return time.tv_sec + time.tv_nsec / 1e9;
}

static void *loop(void *result)
{
	const struct pam_conv conversation = {converse, NULL};
	long checks = 0;
	for (double end = now() + seconds; now() < end; checks++) {
		pam_handle_t *pamh;
		if (pam_start(service, user, &conversation, &pamh) != PAM_SUCCESS)
			exit(2);
		int code = pam_authenticate(pamh, PAM_SILENT);
		if (code == PAM_SUCCESS)
			code = pam_acct_mgmt(pamh, PAM_SILENT);
		pam_end(pamh, code);
		if (code != PAM_SUCCESS)
			exit(3);
	}
	*(long *)result = checks;
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 6 && argc != 7)
		return 1;
	service = argv[1], user = argv[2], password = argv[3], seconds = atof(argv[4]);
	int threads = atoi(argv[5]);
	pthread_t ids[16];
	long counts[16] = {0}, total = 0;
	if (argc == 7 && strcmp(argv[6], "pin") == 0) {
		const struct pam_conv conversation = {converse, NULL};
		pam_handle_t *pin;
		if (pam_start(service, user, &conversation, &pin) != PAM_SUCCESS || pam_authenticate(pin, PAM_SILENT) != PAM_SUCCESS)
			return 2;
	}
	double start = now();
	for (int index = 0; index < threads && index < 16; index++)
		pthread_create(&ids[index], NULL, loop, &counts[index]);
	for (int index = 0; index < threads && index < 16; index++) {
		pthread_join(ids[index], NULL);
		total += counts[index];
	}
	double elapsed = now() - start;
	printf("{\"checks\":%ld,\"seconds\":%.3f,\"rate\":%.0f}\n", total, elapsed, total / elapsed);
	return 0;
}
