#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=1 --max-old-space-size=1024
/**
`pam-authserviced`: flags, environment and file → configuration → listen → signals. Takes the
original x2gobroker-authservice's flags with the same meaning, plus one flag for every limit.
Precedence: flags > environment (`PAM_AUTHSERVICE_<FLAG>`) > configuration file > defaults.

The line above is the one place for Node's own flags and environment; the Debian package's
wrapper and the benchmark read them from there.
- `MALLOC_ARENA_MAX=2`: glibc gives a thread that mallocs while another holds the lock an arena of
  its own, up to eight a core, and memory freed in one arena is not reused by another. V8's helper
  threads and libuv's thread pool (the log's writes) each kept one: 2 to 3 MiB after the
  benchmark's load. With two arenas, the main thread's and one the helpers share: 1.4 and 2.0 MiB
  less after the load in two interleaved pairs of runs, the rate within the machine's drift. It
  must be in the environment before Node.js starts its threads, hence here and not in the code.
- `--max-semi-space-size=1` caps V8's young generation at 1 MiB a half (Node 20's default lets it
  grow to 16): after the benchmark's load the daemon kept 20 MiB less with 2 MiB, and 2 to 2.5 MiB
  less again with 1, for about 3.5 % of the rate with one request per connection and 8 clients
  (16 interleaved runs each) and about 5 % more CPU in the daemon's own process: more frequent
  young-generation collections. Memory is what every machine running the daemon pays; the rate is
  far above any login peak.
- `--max-old-space-size=1024` caps the heap at 1 GiB, far above what the default limits can fill
  (1024 connections with 128 requests in flight each, 100 000 throttle keys). V8 sizes the heap
  from the machine's memory, and on a machine of 2 GiB or more lets it grow fourfold before a full
  collection; below a 2 GiB cap it grows by 8 MiB at a time. The daemon's live heap is about
  8 MiB, so under load it held 30 to 40 MiB of garbage. With the cap: 20 MiB less resident after
  the benchmark's load, the same on every machine, for about 5 % more CPU in the daemon's own
  process (more frequent full collections).
*/
import {spawn} from 'node:child_process';
import {createWriteStream} from 'node:fs';
import path from 'node:path';
import yargs from 'yargs';
import {defaultConfig, integerOptions, logLevels, parseMode, validateConfig, type Config, type IntegerOptionName, type LogLevel} from '../config.js';
import {defaultConfigPath, kebab, readConfigFile, x2goDefaultsSocket, type FileValues} from '../config-file.js';
import {createDemo, type Demo} from '../demo.js';
import {ConfigError} from '../errors.js';
import {isEntryPoint} from './entry-point.js';
import {createLogging, type LogTarget, type Logger} from '../logger.js';
import {setDumpable} from '../native.js';
import {acquirePidFile, type PidFile} from '../pidfile.js';
import {compilePolicy, parseCallersFlags} from '../policy.js';
import {WorkerPool} from '../pool.js';
import {createServer} from '../server.js';
import {socketPathVariable} from '../socket-path.js';
import {disableCoreDumps, raiseOpenFileLimit, resolveGid, resolveUid} from '../system.js';
import {createNotifier, takeListenFd} from '../systemd.js';

export const exitCodes = {
	ok: 0,
	failure: 1,
	usage: 2,
} as const;

/** The environment variable a daemonized child writes its readiness to (a pipe's descriptor). */
// Not under PAM_AUTHSERVICE_: yargs would read that prefix as options.
const readyFdVariable = 'AUTHSERVICED_READY_FD';

/** Where a daemonized daemon logs when no log file is given, as the original logs to /var/log. */
const defaultDaemonLogFile = '/var/log/pam-authservice/pam-authservice.log';

/** Settings that need a restart: a reload reports them instead of applying them. */
const restartOnly = ['socketPath', 'owner', 'group', 'socketMode', 'maxLogBacklogBytes'] as const satisfies ReadonlyArray<keyof Config>;

export type DaemonArgs = {
	readonly config: Config;
	readonly logTarget: LogTarget;
	readonly demo: Demo | undefined;
	readonly configPath: string;
	readonly checkConfig: boolean;
	readonly daemonize: boolean;
	readonly pidFile: string | undefined;
};

class HelpShown extends Error {}

/**
Turn the command line, the environment and the configuration file into a validated configuration.
@throws {ConfigError} Naming the option (and, for the file, the line) that is wrong.
*/
export async function parseDaemonArgs(argv: readonly string[], environment: NodeJS.ProcessEnv): Promise<DaemonArgs> {
	// Defaults are applied below, after the file: a yargs default would hide whether a flag was given.
	let parser = yargs([...argv])
		.scriptName('pam-authserviced')
		.usage('$0 [options]\n\nServe PAM checks on a Unix socket, as x2gobroker-authservice does. Every option can also be set in the configuration file (same name, without --) or in the environment (PAM_AUTHSERVICE_ and the name in capitals, - as _).')
		// Unwrapped when not a terminal, so that help2man lays out the man page itself.
		.wrap(process.stdout.isTTY ? Math.min(100, process.stdout.columns) : null)
		.strict()
		.version(false)
		.help('help')
		.alias('help', 'h')
		.exitProcess(false)
		.env('PAM_AUTHSERVICE')
		.parserConfiguration({'duplicate-arguments-array': false})
		.fail((message, error) => {
			throw error instanceof ConfigError ? error : new ConfigError(message || (error?.message ?? 'invalid arguments'), 'arguments', {cause: error});
		})
		// The general options first, then the limits.
		.group(['config', 'check-config', 'socket-file', 'owner', 'group', 'permissions', 'debug', 'debug-interactively', 'services', 'callers', 'log-level', 'log-file', 'logdir', 'daemonize', 'pidfile', 'worker-path', 'demo', 'help'], 'Options:')
		.option('config', {alias: 'c', type: 'string', defaultDescription: defaultConfigPath, describe: 'The configuration file (INI)'})
		.option('check-config', {type: 'boolean', describe: 'Check the configuration, print the effective one and exit (0 good, 2 bad)'})
		.option('socket-file', {alias: 's', type: 'string', defaultDescription: `$${socketPathVariable} or /run/x2gobroker/x2gobroker-authservice.socket`, describe: 'The socket to serve on'})
		.option('owner', {alias: 'o', type: 'string', defaultDescription: 'root', describe: 'User (name or uid) that owns the socket'})
		.option('group', {alias: 'g', type: 'string', defaultDescription: 'root', describe: 'Group (name or gid) of the socket'})
		.option('permissions', {alias: 'p', type: 'string', defaultDescription: '0o660', describe: 'File mode of the socket'})
		.option('debug', {alias: 'd', type: 'boolean', describe: 'Log at debug level'})
		.option('debug-interactively', {alias: 'i', type: 'boolean', describe: 'Log at debug level, readable, to standard error'})
		.option('services', {type: 'string', array: true, defaultDescription: 'x2gobroker', describe: 'PAM services callers may ask for (space- or comma-separated)'})
		.option('callers', {type: 'string', array: true, describe: 'Who may ask for a service: SERVICE=user:NAME,group:NAME (repeatable; default: whoever can open the socket)'})
		.option('log-level', {type: 'string', choices: logLevels, defaultDescription: 'info', describe: 'Least severe log level written'})
		.option('log-file', {type: 'string', describe: 'Append JSON log lines to this file, reopened on SIGUSR1 (default: standard output)'})
		.option('logdir', {alias: 'L', type: 'string', describe: 'As the original: log to pam-authservice.log in this folder'})
		.option('daemonize', {alias: 'D', type: 'boolean', describe: 'Go to the background; the parent exits 0 once the daemon serves'})
		.option('pidfile', {alias: 'P', type: 'string', describe: 'Write the daemon\'s pid here (refuses to start if it names a live process)'})
		.option('worker-path', {type: 'string', defaultDescription: 'the one built with this package', describe: 'The PAM worker program'})
		.option('demo', {type: 'string', describe: 'Serve a demo PAM sandbox (pam_wrapper) from this folder, socket inside it; touches nothing in /etc'});
	for (const [name, option] of Object.entries(integerOptions)) {
		parser = parser.option(kebab(name), {type: 'number', defaultDescription: String(option.default), describe: option.describe, group: 'Limits:'});
	}

	const args = await parser.parseAsync() as Record<string, unknown>;
	if (args['help'] === true) {
		throw new HelpShown();
	}

	const configPath = args['config'] === undefined ? undefined : path.resolve(String(args['config']));
	const file = readConfigFile(configPath ?? defaultConfigPath, configPath === undefined);
	const given = (flag: string): unknown => args[flag] ?? file.values[flag];

	const defaults = defaultConfig();
	const integers = {} as Record<IntegerOptionName, number>;
	for (const name of Object.keys(integerOptions) as IntegerOptionName[]) {
		const value = given(kebab(name)) ?? defaults[name];
		if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
			throw new ConfigError(`The \`--${kebab(name)}\` option must be a whole number`, name);
		}

		integers[name] = value;
	}

	const logToStderr = args['debugInteractively'] === true;
	const debug = args['debug'] === true || logToStderr;
	const demo = typeof args['demo'] === 'string' ? createDemo(args['demo'] || '.sandbox') : undefined;
	const list = (value: unknown): string[] => (Array.isArray(value) ? value : [value]).flatMap(entry => String(entry).split(',')).map(entry => entry.trim()).filter(Boolean);
	const flagCallers = parseCallersFlags(((args['callers'] ?? []) as unknown[]).map(String));
	// The original's variable counts as environment, its /etc/x2go/broker/defaults.conf as a default.
	const socketPath = args['socketFile'] ?? environment[socketPathVariable] ?? file.values['socket-file'] ?? x2goDefaultsSocket() ?? defaults.socketPath;
	const config = validateConfig({
		...defaults,
		...integers,
		socketPath: demo?.socketPath ?? path.resolve(String(socketPath)),
		owner: demo ? String(process.getuid?.() ?? 0) : String(given('owner') ?? defaults.owner),
		group: demo ? String(process.getgid?.() ?? 0) : String(given('group') ?? defaults.group),
		socketMode: given('permissions') === undefined ? defaults.socketMode : parseMode(String(given('permissions')), 'permissions'),
		services: given('services') === undefined ? defaults.services : list(given('services')),
		logLevel: debug ? 'debug' : (given('log-level') ?? defaults.logLevel) as LogLevel,
		workerPath: path.resolve(String(given('worker-path') ?? defaults.workerPath)),
		callers: Object.keys(flagCallers).length > 0 ? flagCallers : file.callers,
	});

	// Names are resolved now, so that a wrong one is a usage error, not a failure at listen time.
	resolveUid(config.owner);
	resolveGid(config.group);
	compilePolicy(config.callers);

	const logFile = given('log-file') ?? (given('logdir') === undefined ? undefined : path.join(String(given('logdir')), 'pam-authservice.log'));
	const logTarget: LogTarget = logFile !== undefined
		? {kind: 'file', path: path.resolve(String(logFile))}
		: logToStderr || (demo && process.stderr.isTTY)
			? {kind: 'pretty', fd: 2}
			: process.stdout.isTTY && args['daemonize'] !== true ? {kind: 'pretty', fd: 1} : {kind: logToStderr ? 'stderr' : 'stdout'};
	return {
		config,
		logTarget,
		demo,
		configPath: configPath ?? defaultConfigPath,
		checkConfig: args['checkConfig'] === true,
		daemonize: args['daemonize'] === true,
		pidFile: args['pidfile'] === undefined ? undefined : path.resolve(String(args['pidfile'])),
	};
}

/** The effective configuration, as a configuration file would say it. */
export function formatConfig(config: Config): string {
	const lines = [
		`socket-file = ${config.socketPath}`,
		`owner = ${config.owner}`,
		`group = ${config.group}`,
		`permissions = 0o${config.socketMode.toString(8)}`,
		`services = ${config.services.join(', ')}`,
		`log-level = ${config.logLevel}`,
		`worker-path = ${config.workerPath}`,
		...Object.keys(integerOptions).map(name => `${kebab(name)} = ${config[name as IntegerOptionName]}`),
		'',
		'[callers]',
		...Object.entries(config.callers).map(([service, entries]) => `${service} = ${entries.join(', ')}`),
	];
	return `${lines.join('\n')}\n`;
}

/**
Keep `maxConnections` below the open-files limit, with room for the workers and the logs, so
that EMFILE never comes from a connection.
*/
function fitToFileLimit(config: Config, logger: Logger): Config {
	const limit = raiseOpenFileLimit();
	// Three descriptors a worker (its pipes), and room for logs, the listener and /proc reads.
	const room = limit - (config.maxWorkers * 3 + 64);
	if (config.maxConnections <= room) {
		return config;
	}

	const maxConnections = Math.max(1, room);
	logger.warn({configured: config.maxConnections, maxConnections, openFileLimit: limit}, 'maxConnections lowered to fit the open-files limit');
	return validateConfig({...config, maxConnections});
}

/**
`--daemonize`: start the daemon again, detached, without the flag, and exit 0 once it serves
(1 if it gives up first). The child says it serves on a pipe, so the parent never guesses.
*/
async function daemonize(argv: readonly string[], logTarget: LogTarget): Promise<number> {
	// A daemon has no terminal to write to: without a log file it logs where the original did.
	const childArgs = [
		...argv.filter(argument => argument !== '-D' && argument !== '--daemonize'),
		...logTarget.kind === 'file' ? [] : ['--log-file', defaultDaemonLogFile],
	];
	const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...childArgs], {
		detached: true,
		stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
		env: {...process.env, [readyFdVariable]: '3'},
	});
	const ready = child.stdio[3] as NodeJS.ReadableStream;
	const served = await new Promise<boolean>(resolve => {
		ready.once('data', () => resolve(true));
		child.once('exit', () => resolve(false));
	});
	child.unref();
	(ready as unknown as {destroy(): void}).destroy();
	if (!served) {
		process.stderr.write(`pam-authserviced: the daemon did not start; see its log (${logTarget.kind === 'file' ? logTarget.path : defaultDaemonLogFile})\n`);
	}

	return served ? exitCodes.ok : exitCodes.failure;
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
	let args: DaemonArgs;
	try {
		args = await parseDaemonArgs(argv, process.env);
	} catch (error) {
		if (error instanceof HelpShown) {
			return exitCodes.ok;
		}

		const prefix = (error as Error).message.includes('\n') ? '' : 'pam-authserviced: ';
		process.stderr.write(`${prefix}${(error as Error).message}\nTry 'pam-authserviced --help' for the options.\n`);
		return exitCodes.usage;
	}

	if (args.checkConfig) {
		process.stdout.write(formatConfig(args.config));
		return exitCodes.ok;
	}

	if (args.daemonize) {
		return daemonize(argv, args.logTarget);
	}

	const {demo, pidFile: pidPath} = args;
	let {config} = args;
	const logging = createLogging({level: config.logLevel, target: args.logTarget, maxBacklogBytes: config.maxLogBacklogBytes});
	try {
		await logging.ready;
	} catch (error) {
		// A log file that cannot be opened at all is a mistake to show now, not a full disk to ride out.
		process.stderr.write(`pam-authserviced: cannot open the log file ${args.logTarget.kind === 'file' ? args.logTarget.path : ''}: ${(error as Error).message}\n`);
		return exitCodes.failure;
	}

	const {logger} = logging;
	const notifier = createNotifier(process.env, error => {
		logger.warn({err: error}, 'cannot notify systemd');
	});
	if (demo) {
		// The workers inherit it: pam_wrapper is an LD_PRELOAD library for them, not for us.
		Object.assign(process.env, demo.workerEnvironment);
	} else if (process.getuid?.() !== 0) {
		logger.warn('not running as root: PAM checks of other users will most likely fail');
	}

	// Nothing of a password in flight may reach a core file or another process's ptrace.
	disableCoreDumps();
	setDumpable(false);
	config = fitToFileLimit(config, logger);

	let pidFile: PidFile | undefined;
	if (pidPath) {
		try {
			pidFile = await acquirePidFile(pidPath);
		} catch (error) {
			logger.fatal({err: error}, (error as Error).message);
			await logging.flush();
			return exitCodes.failure;
		}
	}

	const listenFd = takeListenFd(process.env);
	const pam = new WorkerPool(config, logger);
	const server = createServer({config, logger, pam, logRequest: logging.request});
	try {
		await server.listen(listenFd);
	} catch (error) {
		logger.fatal({err: error}, (error as Error).message);
		await Promise.all([pam.close(), pidFile?.remove()]);
		await logging.flush();
		return exitCodes.failure;
	}

	const status = (): string => {
		const {connections, requests, ok, fail} = server.stats;
		const workers = pam.stats;
		return `serving ${listenFd === undefined ? config.socketPath : 'the socket from systemd'}: ${connections} connections, ${requests} requests (${ok} ok, ${fail} fail), ${workers.workers} workers (${workers.busy} busy)`;
	};

	if (demo) {
		process.stderr.write(demo.banner);
	}

	logger.info({socketPath: listenFd === undefined ? config.socketPath : `fd ${listenFd} from systemd`, owner: config.owner, group: config.group, mode: `0o${config.socketMode.toString(8)}`, services: config.services, minWorkers: config.minWorkers, eagerWorkers: pam.eagerWorkers, maxWorkers: config.maxWorkers}, 'serving');
	// Out before anyone is told that the daemon is ready: whoever started it may look for this line.
	await logging.flush();
	notifier.notify({READY: 1, STATUS: status(), MAINPID: process.pid});
	const stopWatchdog = notifier.startWatchdog(status);
	const readyFd = process.env[readyFdVariable];
	if (readyFd) {
		delete process.env[readyFdVariable];
		const ready = createWriteStream('', {fd: Number(readyFd)});
		ready.end('ready\n');
	}

	process.on('SIGUSR1', () => {
		logging.reopen();
		logger.info('log file reopened');
	});

	process.on('SIGHUP', () => {
		void (async () => {
			let next: Config;
			try {
				next = (await parseDaemonArgs(argv, process.env)).config;
			} catch (error) {
				logger.error({problems: (error as Error).message.split('\n')}, 'reload refused: the configuration is invalid; keeping the one in force');
				return;
			}

			next = fitToFileLimit(next, logger);
			const kept = restartOnly.filter(key => next[key] !== config[key]);
			if (kept.length > 0) {
				logger.warn({options: kept}, 'these options change only at a restart: keeping their old values');
				next = validateConfig({...next, ...Object.fromEntries(kept.map(key => [key, config[key]]))});
			}

			config = next;
			server.reconfigure(config);
			pam.reconfigure(config);
			logger.level = config.logLevel;
			logger.info({services: config.services, logLevel: config.logLevel}, 'configuration reloaded');
			notifier.notify({STATUS: status()});
		})();
	});

	return new Promise(resolve => {
		let stopping = false;
		const stop = (signal: NodeJS.Signals): void => {
			if (stopping) {
				logger.warn({signal}, 'already stopping');
				return;
			}

			stopping = true;
			stopWatchdog();
			notifier.notify({STOPPING: 1, STATUS: 'stopping: answering the requests in flight'});
			logger.info({signal, ...server.stats}, 'stopping: answering the requests in flight');
			void server.close().then(async () => {
				await pidFile?.remove();
				logger.info('stopped');
				await logging.flush();
				resolve(exitCodes.ok);
			});
		};

		process.on('SIGTERM', stop);
		process.on('SIGINT', stop);
	});
}

if (isEntryPoint(import.meta.url)) {
	process.exitCode = await main();
}
