/**
One `Config` type, its defaults and its validation. Every limit is here, once: its name (the config
key), its flag (the key in kebab-case), its default, its bounds and the words that explain it.
*/
import path from 'node:path';
import {fileURLToPath} from 'node:url';
import {ConfigError} from './errors.js';
import {resolveSocketPath} from './socket-path.js';

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof logLevels)[number];

type IntegerOption = {
	readonly default: number;
	readonly min: number;
	readonly max: number;
	readonly describe: string;
};

/** The numeric limits, each with its default and bounds. The keys are the config keys. */
export const integerOptions = {
	maxLineBytes: {default: 4096, min: 16, max: 1_048_576, describe: 'A longer request line is answered `fail` and its connection closed'},
	maxUserBytes: {default: 256, min: 1, max: 4096, describe: 'A longer user name is answered `fail` without calling PAM'},
	maxPasswordBytes: {default: 511, min: 1, max: 511, describe: 'A longer password is answered `fail` without calling PAM (PAM takes at most 511 bytes)'},
	maxServiceBytes: {default: 64, min: 1, max: 255, describe: 'A longer service name is answered `fail` without calling PAM'},
	idleTimeoutMs: {default: 30_000, min: 100, max: 86_400_000, describe: 'A connection with no complete request for this long is closed'},
	maxConnections: {default: 1024, min: 1, max: 1_000_000, describe: 'Open connections at once; at the limit the longest-idle one makes room for a new one'},
	maxRequestsPerConnection: {default: 128, min: 1, max: 65_536, describe: 'Pipelined requests in flight on one connection; beyond it the connection is not read until answers go out'},
	minWorkers: {default: 2, min: 0, max: 1024, describe: 'PAM worker processes kept running when idle'},
	maxWorkers: {default: 32, min: 1, max: 1024, describe: 'PAM worker processes at most (checks run in parallel)'},
	eagerWorkers: {default: 0, min: 0, max: 1024, describe: 'Workers started as soon as checks wait (0: two a CPU); beyond them the pool grows only for slow checks'},
	slowCheckMs: {default: 20, min: 1, max: 3_600_000, describe: 'A check running this long while its worker sleeps (it waits on the network, a sleep, a child) is slow: each slow check lets the pool grow by one worker'},
	maxQueuedChecks: {default: 1024, min: 0, max: 1_000_000, describe: 'Checks waiting for a free worker; beyond it a check is answered `fail` at once'},
	checkTimeoutMs: {default: 60_000, min: 100, max: 3_600_000, describe: 'A PAM check running longer has its worker killed and is answered `fail`'},
	maxChecksPerWorker: {default: 10_000, min: 1, max: 100_000_000, describe: 'A worker is replaced after this many checks (PAM modules leak)'},
	workerIdleTimeoutMs: {default: 60_000, min: 100, max: 86_400_000, describe: 'A worker above `minWorkers` idle for this long is stopped'},
	maxFailDelayMs: {default: 10_000, min: 0, max: 600_000, describe: 'The longest failure delay a PAM module may ask for (pam_faildelay, pam_unix); a `fail` is held back by that long'},
	shutdownTimeoutMs: {default: 10_000, min: 0, max: 600_000, describe: 'On SIGTERM, how long to wait for checks in flight before answering them `fail`'},
	maxConnectionsPerUid: {default: 64, min: 1, max: 1_000_000, describe: 'Open connections of one caller uid at once; beyond it a new one is closed'},
	freeFailures: {default: 3, min: 0, max: 1_000_000_000, describe: 'Failures in a row for one (service, user) before answers are held back'},
	backoffBaseMs: {default: 1000, min: 0, max: 3_600_000, describe: 'The first hold after the free failures; it doubles with each further failure'},
	backoffMaxMs: {default: 30_000, min: 0, max: 3_600_000, describe: 'The longest hold for one (service, user)'},
	failureWindowMs: {default: 900_000, min: 1000, max: 86_400_000, describe: 'A (service, user) with no failure for this long starts again with its free failures'},
	maxWaitingPerKey: {default: 4, min: 0, max: 10_000, describe: 'Requests waiting in line for one (service, user); beyond it `fail` at once'},
	maxWaitingChecks: {default: 10_000, min: 1, max: 1_000_000, describe: 'Requests waiting in the throttle in all; beyond it `fail` at once'},
	maxThrottleKeys: {default: 100_000, min: 100, max: 10_000_000, describe: 'The (service, user) keys and caller budgets remembered; the least recently used go first'},
	failureBudgetPerSecond: {default: 20, min: 1, max: 1_000_000_000, describe: 'Failures per second one caller uid may cause before its checks are held'},
	failureBudgetBurst: {default: 100, min: 1, max: 1_000_000_000, describe: 'Failures one caller uid may cause at once before the rate applies'},
	maxLogBacklogBytes: {default: 4_194_304, min: 262_144, max: 1_073_741_824, describe: 'Bytes of log lines held while the log cannot be written (a full disk, a stalled journal); beyond them lines are dropped, and counted'},
} as const satisfies Record<string, IntegerOption>;

export type IntegerOptionName = keyof typeof integerOptions;

export type Config = Readonly<Record<IntegerOptionName, number>> & {
	/** @default '/run/x2gobroker/x2gobroker-authservice.socket', or `$X2GOBROKER_AUTHSERVICE_SOCKET` */
	readonly socketPath: string;
	/** User name or uid that owns the socket. @default 'root' */
	readonly owner: string;
	/** Group name or gid of the socket. @default 'root' */
	readonly group: string;
	/** @default 0o660 */
	readonly socketMode: number;
	/** The PAM services callers may ask for. @default ['x2gobroker'] */
	readonly services: readonly string[];
	/** @default 'info' */
	readonly logLevel: LogLevel;
	/** The PAM worker program. @default the one built with this package */
	readonly workerPath: string;
	/**
	Per PAM service, who may ask: `user:NAME|UID`, `group:NAME|GID`. A service not named here is
	open to whoever can open the socket.
	@default {}
	*/
	readonly callers: Readonly<Record<string, readonly string[]>>;
};

export const defaultWorkerPath = fileURLToPath(new URL('../build/pam-authservice-worker', import.meta.url));

export function defaultConfig(environment: NodeJS.ProcessEnv = {}): Config {
	const integers = Object.fromEntries(Object.entries(integerOptions).map(([name, option]) => [name, option.default])) as Record<IntegerOptionName, number>;
	return {
		...integers,
		socketPath: resolveSocketPath(environment),
		owner: 'root',
		group: 'root',
		socketMode: 0o660,
		services: ['x2gobroker'],
		logLevel: 'info',
		workerPath: defaultWorkerPath,
		callers: {},
	};
}

/**
Parse a file mode as the original daemon takes it (`0o660`) or as chmod does (`0660`, `660`).
@throws {ConfigError}
*/
export function parseMode(text: string, option = 'permissions'): number {
	const match = /^0?o?([0-7]{3,4})$/.exec(text.trim());
	const mode = match ? Number.parseInt(match[1]!, 8) : Number.NaN;
	if (Number.isNaN(mode) || mode > 0o777) {
		throw new ConfigError(`The \`${option}\` option must be an octal file mode such as 0o660, not \`${text}\``, option);
	}

	return mode;
}

/**
Check a whole configuration once, so that the rest of the program can trust it.
@returns The same configuration, frozen.
@throws {ConfigError} Naming the first option that is wrong.
*/
export function validateConfig(config: Config): Config {
	for (const [name, option] of Object.entries(integerOptions) as Array<[IntegerOptionName, IntegerOption]>) {
		const value = config[name];
		if (!Number.isSafeInteger(value) || value < option.min || value > option.max) {
			throw new ConfigError(`The \`${name}\` option must be a whole number from ${option.min} to ${option.max}, not \`${String(value)}\``, name);
		}
	}

	if (config.minWorkers > config.maxWorkers) {
		throw new ConfigError(`The \`minWorkers\` option (${config.minWorkers}) cannot be greater than \`maxWorkers\` (${config.maxWorkers})`, 'minWorkers');
	}

	if (!path.isAbsolute(config.socketPath)) {
		throw new ConfigError(`The \`socketPath\` option must be an absolute path, not \`${config.socketPath}\``, 'socketPath');
	}

	// The kernel's sun_path holds 108 bytes with its NUL; bind() would fail later with a vaguer error.
	if (Buffer.byteLength(config.socketPath) > 100) {
		throw new ConfigError(`The \`socketPath\` option must be at most 100 bytes long: ${config.socketPath}`, 'socketPath');
	}

	if (config.services.length === 0) {
		throw new ConfigError('The `services` option must name at least one PAM service', 'services');
	}

	for (const service of config.services) {
		if (!/^[\w.@+-]+$/.test(service) || Buffer.byteLength(service) > config.maxServiceBytes) {
			throw new ConfigError(`The \`services\` option has an invalid PAM service name: \`${service}\``, 'services');
		}
	}

	if (!logLevels.includes(config.logLevel)) {
		throw new ConfigError(`The \`logLevel\` option must be one of ${logLevels.join(', ')}, not \`${config.logLevel}\``, 'logLevel');
	}

	if (!(config.socketMode >= 0 && config.socketMode <= 0o777)) {
		throw new ConfigError('The `socketMode` option must be a file mode from 0o000 to 0o777', 'socketMode');
	}

	if (config.backoffBaseMs > config.backoffMaxMs) {
		throw new ConfigError(`The \`backoffBaseMs\` option (${config.backoffBaseMs}) cannot be greater than \`backoffMaxMs\` (${config.backoffMaxMs})`, 'backoffBaseMs');
	}

	for (const service of Object.keys(config.callers)) {
		if (!config.services.includes(service)) {
			throw new ConfigError(`The \`callers\` option names \`${service}\`, which is not in \`services\``, 'callers');
		}
	}

	return Object.freeze({...config, services: Object.freeze([...config.services]), callers: Object.freeze({...config.callers})});
}
