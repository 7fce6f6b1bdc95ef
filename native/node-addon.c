/*
 * The two system calls Node.js lacks that a root authentication daemon needs:
 *   peerCredentials(fd, out)                 getsockopt(SO_PEERCRED): who is at the other end of a
 *                                            Unix socket, as the kernel recorded it at connect();
 *                                            pid, uid, gid into `out`, a Uint32Array of 3
 *   setDumpable(bool), isDumpable() → bool   prctl(PR_[SG]ET_DUMPABLE): no core file and no ptrace
 *                                            by other processes of our uid, while passwords are in
 *                                            memory
 *   sendDatagram(path, text)                 one datagram to a Unix socket: systemd's sd_notify
 *                                            protocol (READY=1, STATUS=…), since Node's dgram has
 *                                            no Unix sockets
 * Plain Node-API (no node-addon-api, no nan): no dependency, and the ABI is stable across Node
 * versions, so the built file survives a Node upgrade. No package does just this: `unix-dgram`,
 * `posix` and `node-linux` lack SO_PEERCRED, and the packages that have it bring a C++ build chain.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>

/* Throw an Error whose `code` is the errno's name (EBADF, ENOTSOCK …), as Node's own errors do. */
static napi_value throw_errno(napi_env env, const char *call, int error)
{
	const char *name = strerrorname_np(error);
	char message[128];
	snprintf(message, sizeof message, "%s failed: %s", call, strerror(error));
	napi_throw_error(env, name ? name : "EUNKNOWN", message);
	return NULL;
}

/*
 * The credentials go into a typed array the caller keeps, not into a new object: creating one and
 * setting three named properties through Node-API took longer than the system call itself, and
 * this runs for every connection.
 */
static napi_value peer_credentials(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	napi_valuetype type;
	int32_t fd;
	bool is_typed_array = false;
	napi_typedarray_type array_type;
	size_t length = 0;
	void *data = NULL;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2
	    || napi_typeof(env, argv[0], &type) != napi_ok || type != napi_number
	    || napi_get_value_int32(env, argv[0], &fd) != napi_ok
	    || napi_is_typedarray(env, argv[1], &is_typed_array) != napi_ok || !is_typed_array
	    || napi_get_typedarray_info(env, argv[1], &array_type, &length, &data, NULL, NULL) != napi_ok
	    || array_type != napi_uint32_array || length < 3) {
		napi_throw_type_error(env, NULL, "peerCredentials(fd, out) takes a file descriptor number and a Uint32Array of 3");
		return NULL;
	}

	struct ucred credentials;
	socklen_t size = sizeof credentials;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &size) != 0)
		return throw_errno(env, "getsockopt(SO_PEERCRED)", errno);

	uint32_t *out = data;
	out[0] = (uint32_t)credentials.pid;
	out[1] = credentials.uid;
	out[2] = credentials.gid;
	return NULL;
}

static napi_value set_dumpable(napi_env env, napi_callback_info info)
{
	size_t argc = 1;
	napi_value argv[1];
	bool dumpable;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1
	    || napi_get_value_bool(env, argv[0], &dumpable) != napi_ok) {
		napi_throw_type_error(env, NULL, "setDumpable(dumpable) takes a boolean");
		return NULL;
	}

	if (prctl(PR_SET_DUMPABLE, dumpable ? 1 : 0, 0, 0, 0) != 0)
		return throw_errno(env, "prctl(PR_SET_DUMPABLE)", errno);
	return NULL;
}

static napi_value is_dumpable(napi_env env, napi_callback_info info)
{
	(void)info;
	int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	if (dumpable < 0)
		return throw_errno(env, "prctl(PR_GET_DUMPABLE)", errno);
	napi_value result;
	napi_get_boolean(env, dumpable != 0, &result);
	return result;
}

/* "@name" is an abstract socket (a leading NUL), as systemd may hand out in NOTIFY_SOCKET. */
static napi_value send_datagram(napi_env env, napi_callback_info info)
{
	size_t argc = 2;
	napi_value argv[2];
	struct sockaddr_un address = {.sun_family = AF_UNIX};
	char message[4096];
	size_t path_length, message_length;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2
	    || napi_get_value_string_utf8(env, argv[0], address.sun_path, sizeof address.sun_path, &path_length) != napi_ok
	    || napi_get_value_string_utf8(env, argv[1], message, sizeof message, &message_length) != napi_ok
	    || path_length == 0 || path_length >= sizeof address.sun_path - 1) {
		napi_throw_type_error(env, NULL, "sendDatagram(path, message) takes a socket path and a string");
		return NULL;
	}

	if (address.sun_path[0] == '@')
		address.sun_path[0] = '\0';
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return throw_errno(env, "socket(AF_UNIX, SOCK_DGRAM)", errno);
	socklen_t length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_length + (address.sun_path[0] ? 1 : 0));
	ssize_t sent = sendto(fd, message, message_length, MSG_NOSIGNAL, (struct sockaddr *)&address, length);
	int error = errno;
	close(fd);
	if (sent < 0)
		return throw_errno(env, "sendto", error);
	return NULL;
}

static napi_value init(napi_env env, napi_value exports)
{
	const napi_property_descriptor functions[] = {
		{"peerCredentials", NULL, peer_credentials, NULL, NULL, NULL, napi_enumerable, NULL},
		{"setDumpable", NULL, set_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
		{"isDumpable", NULL, is_dumpable, NULL, NULL, NULL, napi_enumerable, NULL},
		{"sendDatagram", NULL, send_datagram, NULL, NULL, NULL, napi_enumerable, NULL},
	};
	if (napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions) != napi_ok)
		return NULL;
	return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
