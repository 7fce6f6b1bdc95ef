/**
The only place the shape of a log line is decided: pino, JSON lines, ISO time, no host name (the
journal has it). Callers never hand a password to the logger; the redaction below is a second
line of defence, not the first.
*/
import {pino, type DestinationStream, type Logger} from 'pino';
import {appendFileSync, write, writeSync} from 'node:fs';
import {createRequire} from 'node:module';
import {integerOptions, type LogLevel} from './config.js';

export type {Logger} from 'pino';

// Required, not imported: Node's ESM import of this CommonJS module left the idle daemon 6 MiB
// larger (RssAnon, the same code either way). The class also carries itself as `.SonicBoom`.
const {SonicBoom} = createRequire(import.meta.url)('sonic-boom') as typeof import('sonic-boom');

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
	/**
	Bytes of lines held while the log cannot be written; beyond them lines are dropped, and counted.
	@default integerOptions.maxLogBacklogBytes.default
	*/
	readonly maxBacklogBytes?: number;
	/** Where a log that cannot be written says so (it cannot say it in itself). @default standard error */
	readonly report?: (message: string) => void;
};

/** Who asked, as the request line shows it. */
export type LoggedCaller = {readonly pid: number; readonly uid: number; readonly user: string; readonly exe?: string | undefined};

/** The line every request gets (`"msg":"request"`): these fields and no others, in this order. */
export type RequestFields = {
	/** The request's number since start; the connection's. */
	readonly request: number;
	readonly conn: number;
	readonly user?: string | undefined;
	readonly service?: string | undefined;
	readonly reason: string;
	/** For a malformed line: its shape, field lengths only (`fields=2 bytes=5,0`). */
	readonly shape?: string | undefined;
	readonly caller?: LoggedCaller | undefined;
	readonly result: 'ok' | 'fail';
	readonly durationMs: number;
	/** How long the `fail` was held back (failure delay, throttle). */
	readonly delayMs?: number | undefined;
	readonly workerPid?: number | undefined;
};

export type Logging = {
	readonly logger: Logger;
	/**
	Log one request's line at `info`. The same JSON line `logger.info(fields, 'request')` would
	write, built here without pino's general serializer (key walk, redaction, a copy of the object):
	that was a tenth of the daemon's CPU a request. Only the fields above can appear, so a password
	has no way in.
	*/
	request(fields: RequestFields): void;
	/** Reopen the log file (SIGUSR1); nothing to do for the other targets. */
	reopen(): void;
	/**
	Write out what is buffered: before the process exits, or before readiness is announced. When no
	write of the log's is in flight it is written here and now, synchronously, and the promise is
	already settled; otherwise it goes out after that write, never ahead of it, and the promise
	settles once all of it is written (or a write failed).
	*/
	flush(): Promise<void>;
	/** Settles once the log file is open (at once for the other targets), or rejects when it cannot be opened. */
	readonly ready: Promise<void>;
};

type Destination = {stream: DestinationStream; reopen(): void; flush(): Promise<void>; ready?: Promise<void>};

/** A JSON line reaches its file or the journal this long after it was logged, at the latest. */
export const logFlushMs = 100;

/** Lines wait until this many bytes have gathered, or `logFlushMs`, whichever comes first. */
export const logBatchBytes = 32 * 1024;

/** A line that may take more than this (UTF-8, at most 3 bytes a UTF-16 unit) goes out on its own. */
const batchRoom = 2 * logBatchBytes;

/**
JSON targets write asynchronously and in batches: `info` lines and below wait until
`logBatchBytes` have gathered or `logFlushMs` has passed, and then go out in one write. Under load
one write a line (and the thread-pool round trip of an asynchronous write) was a fifth of the
daemon's CPU for each request. A warning or an error goes out at once, with what waits before it.
`flush()` writes out the rest (at exit, and before readiness is announced); a daemon killed by
SIGKILL loses at most the last `logFlushMs` of `info` lines.

Each line is encoded into the batch's buffer as it comes, and sonic-boom is handed the buffer.
Gathered as strings, as they were, the lines were joined, measured twice, encoded for the write
and encoded again when it came back (sonic-boom's string mode), and batches of 8 KiB made a write
every 24 requests: `request()` took about 4.5 µs of the event loop a request, now 2.5 (CPU
profile, one request per connection, 8 clients).

A log that cannot be written (a full disk, a journal gone or stalled) does not stop the answers:
the trouble is reported once, on standard error, lines are held up to `maxBacklogBytes` and
dropped beyond them, each write retries, and once all that is held is written a warning in the
log says how many lines were lost. sonic-boom is made here, not by `pino.destination()`, whose
exit hook calls `flushSync()`: with sonic-boom 4, on a write error that loops for ever, and the
daemon, alive and listening, answered no one again.
*/
function batched(destination: {dest: string} | {fd: number}, maxBacklogBytes: number, writeNow: (bytes: Buffer) => void, trouble: Trouble): Destination {
	const warn = pino.levels.values['warn']!;
	// A file is appended to, its folder made if missing; a descriptor is written as it is.
	const boom = new SonicBoom({...destination, append: true, mkdir: true, sync: false, contentMode: 'buffer', maxLength: maxBacklogBytes});
	// Opened with `contentMode: 'buffer'`, sonic-boom takes Buffers; its types know only strings.
	const bytesOut = boom as unknown as {write(bytes: Buffer): boolean};
	// Bytes handed to sonic-boom and not yet written. sonic-boom reports each write ('write', bytes)
	// but not whether one is in flight, and a line written by `flush()` must not overtake one.
	let inFlight = 0;
	const settle: Array<() => void> = [];
	const settled = (): void => {
		for (const resolve of settle.splice(0)) {
			resolve();
		}
	};

	/** Whether the log was ever opened. A file reopened on SIGUSR1 and failing to open keeps the old one. */
	let opened = false;
	/** A write failed, and none has succeeded since. */
	let failing = false;
	/** Whether trouble (an error, a dropped line) was reported and the log has not caught up since. */
	let troubled = false;
	let droppedLines = 0;
	const troubleBegins = (reason: string): void => {
		if (!troubled) {
			troubled = true;
			trouble.failed(reason);
		}
	};

	boom.on('write', (bytes: number) => {
		inFlight -= bytes;
		if (bytes > 0) {
			failing = false;
		}

		if (inFlight <= 0) {
			inFlight = 0;
			settled();
			if (troubled) {
				// Caught up: everything held is written.
				troubled = false;
				const dropped = droppedLines;
				droppedLines = 0;
				// Not from inside sonic-boom's own 'write' event: the warning is another write.
				setImmediate(() => {
					trouble.recovered(dropped);
				});
			}
		}
	}).on('error', (error: Error) => {
		if (!opened) {
			// The file could not be opened at all: `ready` says so.
			return;
		}

		// sonic-boom keeps what it could not write and tries it again at the next write.
		failing = true;
		troubleBegins(error.message);
		settled();
	}).on('drop', (bytes: Buffer) => {
		// A write failing, or one too slow (a stalled journal is retried without an error).
		inFlight -= bytes.length;
		for (let at = bytes.indexOf(10); at !== -1; at = bytes.indexOf(10, at + 1)) {
			droppedLines++;
		}

		troubleBegins(`more than ${maxBacklogBytes} bytes of lines wait to be written`);
		// A dropped write starts no retry: this empty one does, when none is under way.
		bytesOut.write(Buffer.alloc(0));
	});
	const handOver = (bytes: Buffer): void => {
		inFlight += bytes.length;
		bytesOut.write(bytes);
	};

	let batch = Buffer.alloc(batchRoom);
	let used = 0;
	let timer: NodeJS.Timeout | undefined;
	/** The lines gathered so far, and a new buffer for what follows (sonic-boom keeps this one until written). */
	const takeBatch = (): Buffer => {
		clearTimeout(timer);
		timer = undefined;
		if (used === 0) {
			return Buffer.alloc(0);
		}

		const taken = batch.subarray(0, used);
		batch = Buffer.alloc(batchRoom);
		used = 0;
		return taken;
	};

	const writeOut = (): void => {
		const taken = takeBatch();
		if (taken.length > 0) {
			handOver(taken);
		}
	};

	// With this symbol set, pino tells the stream each line's level (as it does for its multistream).
	const stream: DestinationStream & {[pino.symbols.needsMetadataGsym]: true; lastLevel?: number} = {
		[pino.symbols.needsMetadataGsym]: true,
		write(line: string) {
			if (line.length * 3 > batchRoom - used) {
				// It might not fit: what is gathered goes first, and a line too long for any batch alone.
				writeOut();
				if (line.length * 3 > batchRoom) {
					handOver(Buffer.from(line));
					return;
				}
			}

			used += batch.write(line, used);
			if (used >= logBatchBytes || (stream.lastLevel ?? 0) >= warn) {
				writeOut();
			} else if (!timer) {
				timer = setTimeout(writeOut, logFlushMs);
				timer.unref();
			}
		},
	};
	return {
		stream,
		// A file is opened asynchronously (a descriptor is `ready` on the next tick).
		ready: new Promise((resolve, reject) => {
			boom.once('ready', () => {
				opened = true;
				resolve();
			}).once('error', reject);
		}),
		reopen: () => boom.reopen(),
		// Async for the wait only: when nothing is in flight, all of it runs before flush() returns.
		async flush() {
			const taken = takeBatch();
			if (inFlight > 0 || failing) {
				// A write is in flight (a batch, a warning), or held: what is gathered goes out after it,
				// in sonic-boom's queue. Written here and now it would land in the file first. A log that
				// cannot be written is not waited for: at exit, what it holds is lost.
				if (taken.length > 0) {
					handOver(taken);
				}

				if (!failing) {
					await new Promise<void>(resolve => {
						settle.push(resolve);
					});
				}

				return;
			}

			try {
				// The lines still gathering, written here and now. Handed to sonic-boom they would go out
				// in a thread-pool write that nothing waits for: a process about to exit, or whoever
				// reads the log right after, could miss them, and the pool may be busy.
				if (taken.length > 0) {
					writeNow(taken);
				}
			} catch {
				// Nowhere to write (a file that cannot be opened, a disk or pipe just filled): nothing
				// more to do at exit.
			}
		},
	};
}

/** What a batched log does when it cannot write, and when it can again. */
type Trouble = {
	failed(reason: string): void;
	recovered(droppedLines: number): void;
};

function destinationFor(target: LogTarget, maxBacklogBytes: number, trouble: Trouble): Destination {
	switch (target.kind) {
		case 'file': {
			return batched({dest: target.path}, maxBacklogBytes, bytes => {
				appendFileSync(target.path, bytes);
			}, trouble);
		}

		case 'pretty': {
			// Loaded only for a terminal: it costs a daemon under systemd 10 MB it would never use.
			const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
			return {stream: pretty({colorize: true, destination: target.fd, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,name'}), reopen() {}, async flush() {}};
		}

		default: {
			const fd = target.kind === 'stderr' ? 2 : 1;
			return batched({fd}, maxBacklogBytes, bytes => {
				for (let written = 0; written < bytes.length;) {
					written += writeSync(fd, bytes, written);
				}
			}, trouble);
		}
	}
}

const name = 'pam-authserviced';

/**
One line on standard error, where a log that cannot be written says so. Written in the thread
pool, as the log is: under systemd standard error is the journal's socket too, and a stalled
journal must not stall the answers. A failure to write it is nowhere left to say.
*/
function reportOnStandardError(message: string): void {
	write(2, `${message}\n`, () => {});
}

/** `,"key":value` for a string that may hold anything a caller sent: JSON.stringify escapes it. */
function text(key: string, value: string | undefined): string {
	return value === undefined ? '' : `,"${key}":${JSON.stringify(value)}`;
}

function numeric(key: string, value: number | undefined): string {
	return value === undefined ? '' : `,"${key}":${Number.isFinite(value) ? value : null}`;
}

/**
The caller's part of the line, made once for each caller object: the server hands the same one for
every connection of a process within a second (`identifyCaller`), and a broker that connects for
each check would otherwise have it built again, with two `JSON.stringify`, for every line.
*/
const callerParts = new WeakMap<LoggedCaller, string>();

function callerPart(caller: LoggedCaller): string {
	let part = callerParts.get(caller);
	if (part === undefined) {
		part = `,"caller":{"pid":${caller.pid},"uid":${caller.uid}${text('user', caller.user)}${text('exe', caller.exe)}}`;
		callerParts.set(caller, part);
	}

	return part;
}

/** The request line, in the shape and order pino gives `logger.info(fields, 'request')`. */
export function requestLine(fields: RequestFields, pid: number, time: string): string {
	const {caller} = fields;
	const callerJson = caller ? callerPart(caller) : '';
	return `{"level":"info"${time},"pid":${pid},"name":"${name}"${numeric('request', fields.request)}${numeric('conn', fields.conn)}${text('user', fields.user)}${text('service', fields.service)}${text('reason', fields.reason)}${text('shape', fields.shape)}${callerJson}${text('result', fields.result)}${numeric('durationMs', fields.durationMs)}${numeric('delayMs', fields.delayMs)}${numeric('workerPid', fields.workerPid)},"msg":"request"}\n`;
}

let timeMs = 0;
let timeText = '';

/** `,"time":"…"` as pino's `isoTime` writes it, made once a millisecond: a busy daemon logs several lines in one. */
function isoTime(): string {
	const now = Date.now();
	if (now !== timeMs) {
		timeMs = now;
		timeText = `,"time":"${new Date(now).toISOString()}"`;
	}

	return timeText;
}

export function createLogging(options: LoggerOptions = {}): Logging {
	const target = options.target ?? {kind: 'stdout'};
	const report = options.report ?? reportOnStandardError;
	const where = target.kind === 'file' ? target.path : `standard ${target.kind === 'stderr' ? 'error' : 'output'}`;
	const trouble: Trouble = {
		failed(reason) {
			report(`${name}: cannot write the log to ${where} (${reason}): answering on; lines are held, then dropped, until it can`);
		},
		recovered(droppedLines) {
			report(`${name}: the log is written to ${where} again; ${droppedLines} lines were dropped`);
			// Called from a write's completion, after `logger` is made.
			logger.warn({droppedLines}, 'the log is written again; lines were dropped while it could not be');
		},
	};
	const {stream, reopen, flush, ready} = options.destination
		? {stream: options.destination, reopen() {}, async flush() {}}
		: destinationFor(target, options.maxBacklogBytes ?? integerOptions.maxLogBacklogBytes.default, trouble);
	const logger = pino(
		{
			name,
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
	const info = pino.levels.values['info']!;
	// A stream that asks for each line's level (the batching one above) is told it, as pino tells it.
	const metadata = (stream as {[pino.symbols.needsMetadataGsym]?: boolean})[pino.symbols.needsMetadataGsym] === true ? stream as {lastLevel?: number} : undefined;
	const request = (fields: RequestFields): void => {
		if (!logger.isLevelEnabled('info')) {
			return;
		}

		if (metadata) {
			metadata.lastLevel = info;
		}

		stream.write(requestLine(fields, process.pid, isoTime()));
	};

	return {logger, request, reopen, flush, ready: ready ?? Promise.resolve()};
}
