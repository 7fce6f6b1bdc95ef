/**
What systemd hands a service, without libsystemd: a listening socket (socket activation:
LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) and a notification socket (NOTIFY_SOCKET: READY=1,
STOPPING=1, STATUS=…, WATCHDOG=1). Both protocols are a few lines each, documented in
sd_listen_fds(3) and sd_notify(3); the datagram goes through the project's addon, since Node's
dgram module has no Unix sockets.
*/
import {sendDatagram} from './native.js';

/** The first descriptor systemd passes (SD_LISTEN_FDS_START). */
const firstPassedFd = 3;

/**
The listening socket systemd passed, if any: the one named `name` (FileDescriptorName=), or the
first. The variables are removed, so that no child believes the sockets are its own.
*/
export function takeListenFd(environment: NodeJS.ProcessEnv, name = 'authservice'): number | undefined {
	const count = Number(environment['LISTEN_FDS']);
	const forUs = Number(environment['LISTEN_PID']) === process.pid;
	const names = environment['LISTEN_FDNAMES']?.split(':') ?? [];
	delete environment['LISTEN_FDS'];
	delete environment['LISTEN_PID'];
	delete environment['LISTEN_FDNAMES'];
	if (!forUs || !Number.isSafeInteger(count) || count < 1) {
		return undefined;
	}

	const index = names.indexOf(name);
	return firstPassedFd + (index >= 0 && index < count ? index : 0);
}

export type Notifier = {
	/** Send `KEY=value` lines; does nothing when not started by systemd with `Type=notify`. */
	notify(state: Record<string, string | number>): void;
	/** Start `WATCHDOG=1` pings when `WatchdogSec=` is set; returns a function that stops them. */
	startWatchdog(status: () => string): () => void;
};

export function createNotifier(environment: NodeJS.ProcessEnv, onError: (error: unknown) => void): Notifier {
	const socketPath = environment['NOTIFY_SOCKET'];
	const watchdogUs = Number(environment['WATCHDOG_USEC']);
	const watchdogForUs = environment['WATCHDOG_PID'] === undefined || Number(environment['WATCHDOG_PID']) === process.pid;
	// Workers must not notify in our name.
	delete environment['NOTIFY_SOCKET'];
	delete environment['WATCHDOG_USEC'];
	delete environment['WATCHDOG_PID'];

	const notify = (state: Record<string, string | number>): void => {
		if (!socketPath) {
			return;
		}

		try {
			sendDatagram(socketPath, Object.entries(state).map(([key, value]) => `${key}=${String(value).replaceAll('\n', ' ')}`).join('\n'));
		} catch (error) {
			onError(error);
		}
	};

	return {
		notify,
		startWatchdog(status) {
			if (!socketPath || !watchdogForUs || !(watchdogUs > 0)) {
				return () => {};
			}

			// Twice per period, as sd_watchdog_enabled(3) advises; a stalled event loop misses them.
			const timer = setInterval(() => {
				notify({WATCHDOG: 1, STATUS: status()});
			}, Math.max(1, Math.floor(watchdogUs / 2000)));
			timer.unref();
			return () => {
				clearInterval(timer);
			};
		},
	};
}
