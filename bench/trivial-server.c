/*
 * The load generator's self-test: a server that costs next to nothing, answering "ok\n" to every
 * line at once, so that the rate measured against it is the load generator's own limit.
 * `trivial-server SOCKET` prints "up" once it listens. Only for the benchmark.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 1;
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	struct sockaddr_un address = {.sun_family = AF_UNIX};
	strncpy(address.sun_path, argv[1], sizeof address.sun_path - 1);
	unlink(argv[1]);
	if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 4096) != 0) {
		perror("trivial-server");
		return 1;
	}
	int poller = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event event = {.events = EPOLLIN, .data.fd = listener};
	epoll_ctl(poller, EPOLL_CTL_ADD, listener, &event);
	printf("up\n");
	fflush(stdout);

	static char input[65536], output[3 * 65536];
	for (size_t index = 0; index < sizeof output; index += 3)
		memcpy(output + index, "ok\n", 3);
	struct epoll_event events[256];
	for (;;) {
		int ready = epoll_wait(poller, events, 256, -1);
		for (int index = 0; index < ready; index++) {
			int fd = events[index].data.fd;
			if (fd == listener) {
				for (int client; (client = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0;) {
					struct epoll_event added = {.events = EPOLLIN, .data.fd = client};
					epoll_ctl(poller, EPOLL_CTL_ADD, client, &added);
				}
				continue;
			}
			ssize_t got = read(fd, input, sizeof input);
			if (got <= 0) {
				if (got == 0 || errno != EAGAIN)
					close(fd);
				continue;
			}
			size_t lines = 0;
			for (ssize_t at = 0; at < got; at++)
				lines += input[at] == '\n';
			/* A client never has more than a few hundred requests in flight: the socket buffer takes them. */
			if (lines > 0 && write(fd, output, 3 * lines) < 0 && errno != EAGAIN)
				close(fd);
		}
	}
}
