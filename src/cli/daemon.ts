#!/usr/bin/env node
/**
`pam-authserviced`: flags → configuration → listen → signals. Takes the original
x2gobroker-authservice's flags with the same meaning, plus one flag for every limit.
*/
import {realpathSync} from 'node:fs';
import path from 'node:path';
import {pathToFileURL} from 'node:url';
import yargs from 'yargs';
import {defaultConfig, integerOptions, logLevels, parseMode, validateConfig, type Config, type IntegerOptionName, type LogLevel} from '../config.js';
import {createDemo, type Demo} from '../demo.js';
import {ConfigError} from '../errors.js';
import {createLogger, type Logger} from '../logger.js';
import {setDumpable} from '../native.js';
import {compilePolicy, parseCallersFlags} from '../policy.js';
import {WorkerPool} from '../pool.js';
import {createServer} from '../server.js';
import {disableCoreDumps, raiseOpenFileLimit, resolveGid, resolveUid} from '../system.js';

export const exitCodes = {
	ok: 0,
	failure: 1,
	usage: 2,
} as const;

/** File descriptors kept free for worker pipes (three a worker), logs and the listener. */
function reservedDescriptors(config: Config): number {
	return config.maxWorkers * 3 + 64;
}

function kebab(name: string): string {
	return name.replaceAll(/[A-Z]/g, letter => `-${letter.toLowerCase()}`);
}

/**
Turn the command line and the environment into a validated configuration.
@throws {ConfigError} Naming the option that is wrong.
*/
export async function parseDaemonArgs(argv: readonly string[], environment: NodeJS.ProcessEnv): Promise<{config: Config; logToStderr: boolean; demo: Demo | undefined}> {
	const defaults = defaultConfig(environment);
	let parser = yargs([...argv])
		.scriptName('pam-authserviced')
		.usage('$0 [options]\n\nServe PAM checks on a Unix socket, as x2gobroker-authservice does.')
		.strict()
		.version(false)
		.help('help')
		.alias('help', 'h')
		.exitProcess(false)
		.parserConfiguration({'duplicate-arguments-array': false})
		.fail((message, error) => {
			throw error instanceof ConfigError ? error : new ConfigError(message || (error?.message ?? 'invalid arguments'), 'arguments', {cause: error});
		})
		.option('socket-file', {alias: 's', type: 'string', default: defaults.socketPath, describe: 'The socket to serve on ($X2GOBROKER_AUTHSERVICE_SOCKET)'})
		.option('owner', {alias: 'o', type: 'string', default: defaults.owner, describe: 'User (name or uid) that owns the socket'})
		.option('group', {alias: 'g', type: 'string', default: defaults.group, describe: 'Group (name or gid) of the socket'})
		.option('permissions', {alias: 'p', type: 'string', default: '0o660', describe: 'File mode of the socket'})
		.option('debug', {alias: 'd', type: 'boolean', default: false, describe: 'Log at debug level'})
		.option('debug-interactively', {alias: 'i', type: 'boolean', default: false, describe: 'Log at debug level to standard error'})
		.option('services', {type: 'string', array: true, default: [...defaults.services], describe: 'PAM services callers may ask for (space- or comma-separated)'})
		.option('log-level', {type: 'string', choices: logLevels, default: defaults.logLevel, describe: 'Least severe log level written'})
		.option('callers', {type: 'string', array: true, default: [] as string[], describe: 'Who may ask for a service: SERVICE=user:NAME,group:NAME (repeatable; default: whoever can open the socket)'})
		.option('worker-path', {type: 'string', default: defaults.workerPath, describe: 'The PAM worker program'})
		.option('demo', {type: 'string', describe: 'Serve a demo PAM sandbox (pam_wrapper) from this folder, socket inside it; touches nothing in /etc', group: 'Demo:'});
	for (const [name, option] of Object.entries(integerOptions)) {
		parser = parser.option(kebab(name), {type: 'number', default: option.default, describe: option.describe, group: 'Limits:'});
	}

	const args = await parser.parseAsync() as Record<string, unknown>;
	if (args['help'] === true) {
		throw new HelpShown();
	}

	const integers = {} as Record<IntegerOptionName, number>;
	for (const name of Object.keys(integerOptions) as IntegerOptionName[]) {
		const value = args[name] as number;
		if (!Number.isSafeInteger(value)) {
			throw new ConfigError(`The \`--${kebab(name)}\` option must be a whole number`, name);
		}

		integers[name] = value;
	}

	const logToStderr = args['debugInteractively'] === true;
	const demo = typeof args['demo'] === 'string' ? createDemo(args['demo'] || '.sandbox') : undefined;
	const debug = args['debug'] === true || logToStderr;
	const config = validateConfig({
		...defaults,
		...integers,
		socketPath: demo?.socketPath ?? path.resolve(String(args['socketFile'])),
		owner: demo ? String(process.getuid?.() ?? 0) : String(args['owner']),
		group: demo ? String(process.getgid?.() ?? 0) : String(args['group']),
		socketMode: parseMode(String(args['permissions']), 'permissions'),
		services: (args['services'] as string[]).flatMap(entry => String(entry).split(',')).map(entry => entry.trim()).filter(Boolean),
		logLevel: debug ? 'debug' : args['logLevel'] as LogLevel,
		workerPath: path.resolve(String(args['workerPath'])),
		callers: parseCallersFlags((args['callers'] as string[]).map(String)),
	});
	// Names are resolved now, so that a wrong one is a usage error, not a failure at listen time.
	resolveUid(config.owner);
	resolveGid(config.group);
	compilePolicy(config.callers);
	return {config, logToStderr, demo};
}

class HelpShown extends Error {}

/**
Keep `maxConnections` below the open-files limit, with room for the workers and the logs, so
that EMFILE never comes from a connection.
*/
function fitToFileLimit(config: Config, logger: Logger): Config {
	const limit = raiseOpenFileLimit();
	const room = limit - reservedDescriptors(config);
	if (config.maxConnections <= room) {
		return config;
	}

	const maxConnections = Math.max(1, room);
	logger.warn({configured: config.maxConnections, maxConnections, openFileLimit: limit}, 'maxConnections lowered to fit the open-files limit');
	return validateConfig({...config, maxConnections});
}

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
	let config: Config;
	let logToStderr: boolean;
	let demo: Demo | undefined;
	try {
		({config, logToStderr, demo} = await parseDaemonArgs(argv, process.env));
	} catch (error) {
		if (error instanceof HelpShown) {
			return exitCodes.ok;
		}

		process.stderr.write(`pam-authserviced: ${(error as Error).message}\nTry 'pam-authserviced --help' for the options.\n`);
		return exitCodes.usage;
	}

	const logger = createLogger({level: config.logLevel, ...(logToStderr ? {destination: process.stderr} : {})});
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

	const pam = new WorkerPool(config, logger);
	const server = createServer({config, logger, pam});
	try {
		await server.listen();
	} catch (error) {
		logger.fatal({err: error}, (error as Error).message);
		await pam.close();
		return exitCodes.failure;
	}

	if (demo) {
		process.stderr.write(demo.banner);
	}

	logger.info({socketPath: config.socketPath, owner: config.owner, group: config.group, mode: `0o${config.socketMode.toString(8)}`, services: config.services, minWorkers: config.minWorkers, maxWorkers: config.maxWorkers}, 'serving');

	return new Promise(resolve => {
		let stopping = false;
		const stop = (signal: NodeJS.Signals): void => {
			if (stopping) {
				logger.warn({signal}, 'already stopping');
				return;
			}

			stopping = true;
			logger.info({signal, ...server.stats}, 'stopping: answering the requests in flight');
			void server.close().then(() => {
				logger.info('stopped');
				resolve(exitCodes.ok);
			});
		};

		process.on('SIGTERM', stop);
		process.on('SIGINT', stop);
	});
}

function isEntryPoint(): boolean {
	try {
		return import.meta.url === pathToFileURL(realpathSync(process.argv[1] ?? '')).href;
	} catch {
		return false;
	}
}

if (isEntryPoint()) {
	process.exitCode = await main();
}
