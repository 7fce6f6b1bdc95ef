/**
The only place the shape of a log line is decided: pino, JSON lines, ISO time, no host name (the
journal has it). Callers never hand a password to the logger; the redaction below is a second
line of defence, not the first.
*/
import {pino, type DestinationStream, type Logger} from 'pino';
import {createRequire} from 'node:module';
import type {LogLevel} from './config.js';

export type {Logger} from 'pino';

export type LogTarget =
	/** JSON lines, for the journal or a collector. */
	| {readonly kind: 'stdout' | 'stderr'}
	/** JSON lines appended to a file, reopened by `reopen()` (after logrotate moved it). */
	| {readonly kind: 'file'; readonly path: string}
	/** Coloured, readable lines, for a person watching a terminal. */
	| {readonly kind: 'pretty'; readonly fd: 1 | 2};

export type LoggerOptions = {
	/** @default 'info' */
	readonly level?: LogLevel;
	/** @default {kind: 'stdout'} */
	readonly target?: LogTarget;
	/** For tests: write here instead. */
	readonly destination?: DestinationStream;
};

export type Logging = {
	readonly logger: Logger;
	/** Reopen the log file (SIGUSR1); nothing to do for the other targets. */
	reopen(): void;
	/** Write out what is buffered, before the process exits. */
	flush(): void;
};

type Destination = {stream: DestinationStream; reopen(): void; flush(): void};

/**
JSON targets write asynchronously: the lines of one event-loop turn go out in one write, not one
write each, which under load is most of the daemon's own CPU. `flush()` writes out the rest at exit.
*/
function destinationFor(target: LogTarget): Destination {
	switch (target.kind) {
		case 'file': {
			const stream = pino.destination({dest: target.path, append: true, mkdir: true, sync: false});
			return {stream, reopen: () => stream.reopen(), flush: () => stream.flushSync()};
		}

		case 'pretty': {
			// Loaded only for a terminal: it costs a daemon under systemd 10 MB it would never use.
			const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
			return {stream: pretty({colorize: true, destination: target.fd, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,name'}), reopen() {}, flush() {}};
		}

		default: {
			const stream = pino.destination({dest: target.kind === 'stderr' ? 2 : 1, sync: false});
			return {stream, reopen() {}, flush: () => stream.flushSync()};
		}
	}
}

export function createLogging(options: LoggerOptions = {}): Logging {
	const {stream, reopen, flush} = options.destination ? {stream: options.destination, reopen() {}, flush() {}} : destinationFor(options.target ?? {kind: 'stdout'});
	const logger = pino(
		{
			name: 'pam-authserviced',
			level: options.level ?? 'info',
			base: {pid: process.pid},
			timestamp: pino.stdTimeFunctions.isoTime,
			redact: {paths: ['password', '*.password', 'secret', '*.secret'], censor: '[redacted]'},
			formatters: {
				level: label => ({level: label}),
			},
		},
		stream,
	);
	return {logger, reopen, flush};
}
