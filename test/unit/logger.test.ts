/**
The request line, written without pino's serializer, is the line pino would write. The log file
target: `info` lines wait to go out in one write (for `logFlushMs` or until `logBatchBytes` have
gathered), warnings go out at once, and `flush()` leaves nothing behind. Lines are encoded into
the batch as they come: none is cut, reordered or mis-encoded at a batch's edge.
*/
import {pbkdf2} from 'node:crypto';
import {spawnSync} from 'node:child_process';
import {closeSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {setTimeout as delay} from 'node:timers/promises';
import {afterEach, describe, expect, it} from 'vitest';
import {createLogging, logBatchBytes, logFlushMs, type RequestFields} from '../../src/logger.js';
import {isRoot, waitFor} from '../helpers/daemon.js';

const directories: string[] = [];

afterEach(() => {
	for (const directory of directories.splice(0)) {
		rmSync(directory, {recursive: true, force: true});
	}
});

/** Every thread of libuv's pool busy for a while: an asynchronous write waits behind them. */
async function occupyThreadPool(): Promise<unknown> {
	return Promise.all(Array.from({length: Number(process.env['UV_THREADPOOL_SIZE'] ?? 4)}, async () => new Promise(resolve => {
		pbkdf2('x', 'salt', 300_000, 32, 'sha256', resolve);
	})));
}

/** A new folder, removed after the test. */
function newDirectory(): string {
	const directory = mkdtempSync(path.join(tmpdir(), 'pam-authservice-logger-'));
	directories.push(directory);
	return directory;
}

type FileLine = {level: string; msg: string; droppedLines?: number};

/**
A logger appending to `file` (by default a new one), its troubles collected in `reports` instead
of said on standard error.
*/
async function fileLogging({file = path.join(newDirectory(), 'log'), maxBacklogBytes}: {file?: string; maxBacklogBytes?: number} = {}) {
	const reports: string[] = [];
	const logging = createLogging({level: 'info', target: {kind: 'file', path: file}, ...maxBacklogBytes === undefined ? {} : {maxBacklogBytes}, report: message => reports.push(message)});
	await logging.ready;
	/** The file's lines, parsed: none while it is missing. */
	const lines = (): FileLine[] => {
		try {
			return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(line => JSON.parse(line) as FileLine);
		} catch {
			return [];
		}
	};

	const messages = (): string[] => lines().map(line => line.msg);
	/** The lines written, and how many the recovery warning says were dropped (none said yet: undefined). */
	const outcome = (): {kept: FileLine[]; droppedLines: number | undefined} => {
		const all = lines();
		return {kept: all.filter(line => line.droppedLines === undefined), droppedLines: all.find(line => line.droppedLines !== undefined)?.droppedLines};
	};

	return {logging, reports, messages, outcome};
}

/** What `logging.request()` and `logger.info(fields, 'request')` write for the same fields, time left out. */
function bothWays(fields: RequestFields): {ours: string; pinos: string} {
	const lines: string[] = [];
	const logging = createLogging({level: 'info', destination: {write: line => lines.push(line)}});
	logging.request(fields);
	logging.logger.info(fields, 'request');
	expect(lines).toHaveLength(2);
	const withoutTime = (line: string) => {
		expect(line.endsWith('}\n')).toBe(true);
		return line.replace(/,"time":"[^"]+"/, '');
	};

	return {ours: withoutTime(lines[0]!), pinos: withoutTime(lines[1]!)};
}

describe('the request line', () => {
	const caller = {pid: 4242, uid: 1000, user: 'x2gobroker', exe: '/usr/bin/python3.11'};
	it.each<[string, RequestFields]>([
		['a check', {request: 7, conn: 3, user: 'alice', service: 'x2gobroker', reason: 'pam: success', caller, result: 'ok', durationMs: 0.123, workerPid: 99}],
		['a held failure', {request: 8, conn: 3, user: 'alice', service: 'x2gobroker', reason: 'pam_authenticate: Authentication failure', caller, result: 'fail', durationMs: 2001.5, delayMs: 2000, workerPid: 99}],
		['a malformed line', {request: 9, conn: 4, reason: 'malformed: 2 fields', shape: 'fields=2 bytes=5,0', caller: {pid: 1, uid: 0, user: 'root'}, result: 'fail', durationMs: 0}],
		['an unknown caller', {request: 10, conn: 5, user: 'bob', service: 'sshd', reason: 'service not allowed', caller: {pid: 0, uid: -1, user: '?'}, result: 'fail', durationMs: 0.01}],
		['hostile text', {request: 11, conn: 6, user: 'a"b\\c\n\u2028\u0000\u001F\u00e9\u{1F600}\ud800', service: '</script>', reason: 'x', caller: {...caller, exe: '/tmp/evil "name"\n'}, result: 'fail', durationMs: 1}],
	])('is the line pino writes, for %s', (_, fields) => {
		const {ours, pinos} = bothWays(fields);
		expect(JSON.parse(ours)).toEqual(JSON.parse(pinos));
		// The same keys in the same order, so that the two cannot be told apart.
		expect(Object.keys(JSON.parse(ours) as object)).toEqual(Object.keys(JSON.parse(pinos) as object));
	});

	it('is not written when the level is above info', () => {
		const lines: string[] = [];
		const logging = createLogging({level: 'warn', destination: {write: line => lines.push(line)}});
		logging.request({request: 1, conn: 1, reason: 'x', result: 'ok', durationMs: 0});
		logging.logger.level = 'info';
		logging.request({request: 2, conn: 1, reason: 'x', result: 'ok', durationMs: 0});
		expect(lines.map(line => (JSON.parse(line) as {request: number}).request)).toEqual([2]);
	});
});

describe('the log file', () => {
	it('holds info lines back for at most logFlushMs, then writes them together', async () => {
		const {messages, logging} = await fileLogging();
		logging.logger.info('one');
		logging.logger.info('two');
		logging.logger.info('three');
		await delay(logFlushMs / 4);
		expect(messages()).toEqual([]);
		await waitFor(() => messages().length === 3, 2000, 2);
		expect(messages()).toEqual(['one', 'two', 'three']);
	});

	it('writes the lines at once when logBatchBytes have gathered, without waiting for the timer', async () => {
		const {messages, logging} = await fileLogging();
		// Each line is a little over 1 000 bytes: the first batch is full before the 33rd.
		const count = 2 * Math.ceil(logBatchBytes / 1000);
		for (let index = 0; index < count; index++) {
			logging.logger.info('x'.repeat(1000));
		}

		const tookMs = await waitFor(() => messages().length >= Math.floor(logBatchBytes / 1100), 2000, 2);
		expect(tookMs).toBeLessThan(logFlushMs);
		await waitFor(() => messages().length === count, 2000, 2);
	});

	it('keeps every line whole and in order across batches, whatever its length and characters', async () => {
		const {messages, logging} = await fileLogging();
		// Two- and four-byte characters (UTF-8), so that bytes and characters differ at every edge.
		const lines = [
			// About 30 KB: the batch is nearly full, not yet written.
			...Array.from({length: 29}, (_, index) => `${index} ${'é'.repeat(500)}`),
			// Too long for what is left of this batch's room, not for a batch of its own.
			`long ${'€'.repeat(12_000)}`,
			'between',
			// Too long for any batch: written alone, after what came before it.
			`longer ${'😀'.repeat(40_000)}`,
			'after',
		];
		for (const line of lines) {
			logging.logger.info(line);
		}

		// Several writes may still be in flight: flush() settles once all of it is written.
		await logging.flush();
		expect(messages()).toEqual(lines);
	});

	it('writes a warning at once, with the info lines before it, in order', async () => {
		const {messages, logging} = await fileLogging();
		logging.logger.info('before');
		logging.logger.warn('trouble');
		const tookMs = await waitFor(() => messages().length === 2, 2000, 2);
		expect(messages()).toEqual(['before', 'trouble']);
		expect(tookMs).toBeLessThan(logFlushMs);
	});

	it('leaves nothing behind after flush()', async () => {
		const {messages, logging} = await fileLogging();
		logging.logger.info('last words');
		void logging.flush();
		expect(messages()).toEqual(['last words']);
	});

	it('does not write the lines still gathering ahead of a write in flight, and settles once both are out', async () => {
		const {messages, logging} = await fileLogging();
		const busy = occupyThreadPool();
		// A warning goes out at once: a write that waits for a thread of the busy pool.
		logging.logger.warn('first');
		logging.logger.info('second');
		const flushed = logging.flush();
		expect(messages()).toEqual([]);
		await flushed;
		expect(messages()).toEqual(['first', 'second']);
		await busy;
	});

	it('writes the lines still gathering at flush() itself, not in the busy thread pool', async () => {
		const {messages, logging} = await fileLogging();
		const busy = occupyThreadPool();
		logging.logger.info('while busy');
		void logging.flush();
		expect(messages()).toEqual(['while busy']);
		await busy;
	});
});

/** A tmpfs of `size` mounted on a new folder, unmounted at the end of the test. Root only. */
function mountTmpfs(size: string): string | undefined {
	const directory = mkdtempSync(path.join(tmpdir(), 'pam-authservice-logger-'));
	if (spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', directory]).status !== 0) {
		rmSync(directory, {recursive: true});
		return undefined;
	}

	unmount.push(directory);
	return directory;
}

const unmount: string[] = [];
afterEach(() => {
	for (const directory of unmount.splice(0)) {
		// Lazily: the logger under test still holds its file open.
		spawnSync('umount', ['--lazy', directory]);
		rmSync(directory, {recursive: true, force: true});
	}
});

const canMountTmpfs = isRoot && (() => {
	const directory = mountTmpfs('64k');
	spawnSync('umount', unmount.splice(0));
	if (directory) {
		rmSync(directory, {recursive: true, force: true});
	}

	return directory !== undefined;
})();

/** Writes to `file` until the file system has no room left. */
function fillUp(file: string): void {
	const fd = openSync(file, 'w');
	try {
		for (const chunk of [Buffer.alloc(65_536), Buffer.alloc(1024)]) {
			for (;;) {
				try {
					writeSync(fd, chunk);
				} catch {
					break;
				}
			}
		}
	} finally {
		closeSync(fd);
	}
}

describe('a log that cannot be written', () => {
	it('does not stop the logger, holds at most maxBacklogBytes, and says how many lines it lost once it can write again', async () => {
		// Every write to /dev/full fails with ENOSPC: a full disk. Moving the link is "space freed".
		const file = path.join(newDirectory(), 'log');
		symlinkSync('/dev/full', file);
		const maxBacklogBytes = 256 * 1024;
		const {logging, reports, outcome} = await fileLogging({file, maxBacklogBytes});

		// A warning goes out at once, and fails. Then about four times the backlog, in one go.
		const padding = 'x'.repeat(1000);
		logging.logger.warn(`0 ${padding}`);
		await waitFor(() => reports.length > 0, 2000, 2);
		let logged = 1;
		for (; logged < 1000; logged++) {
			logging.logger.info(`${logged} ${padding}`);
		}

		for (; logged < 1100; logged++) {
			logging.logger.warn(`${logged} ${padding}`);
		}

		// Nothing to wait for: a log that cannot be written is not waited for.
		await logging.flush();
		await delay(50);
		expect(reports).toHaveLength(1);
		expect(reports[0]).toContain(file);
		expect(reports[0]).toContain('ENOSPC');

		rmSync(file);
		writeFileSync(file, '');
		logging.reopen();
		await waitFor(() => outcome().droppedLines !== undefined, 2000, 2);
		expect(reports).toHaveLength(2);

		const {kept, droppedLines} = outcome();
		expect(reports[1]).toContain(`${droppedLines} lines were dropped`);
		// Each line either written, whole and in order, or counted: none lost unsaid.
		expect(kept.length).toBeGreaterThan(0);
		expect(droppedLines).toBeGreaterThan(0);
		expect(kept.length + droppedLines!).toBe(logged);
		const numbers = kept.map(line => Number(line.msg.split(' ')[0]));
		expect(numbers).toEqual([...numbers].sort((a, b) => a - b));
		// Held while failing: at most the backlog.
		expect(Buffer.byteLength(kept.map(line => JSON.stringify(line)).join('\n'))).toBeLessThanOrEqual(maxBacklogBytes);
	});

	it('drops what is beyond maxBacklogBytes when writes only lag, with no error, says so, and counts it once caught up', async () => {
		const {logging, reports, outcome} = await fileLogging({maxBacklogBytes: 256 * 1024});
		const padding = 'x'.repeat(1000);
		// About four times the backlog at once: no write can finish in between.
		for (let index = 0; index < 1000; index++) {
			logging.logger.info(`${index} ${padding}`);
		}

		logging.logger.warn('last');
		expect(reports).toHaveLength(1);
		expect(reports[0]).toContain('more than 262144 bytes of lines wait to be written');
		await waitFor(() => outcome().droppedLines !== undefined, 2000, 2);
		const {kept, droppedLines} = outcome();
		expect(droppedLines).toBeGreaterThan(0);
		expect(kept.length + droppedLines!).toBe(1001);
		expect(reports[1]).toContain(`${droppedLines} lines were dropped`);
	});

	it.skipIf(!canMountTmpfs)('writes again by itself once the disk has room, though every line since was dropped (as root, on a small tmpfs)', async () => {
		const directory = mountTmpfs('1m')!;
		const filler = path.join(directory, 'filler');
		fillUp(filler);
		const {logging, reports, outcome} = await fileLogging({file: path.join(directory, 'log'), maxBacklogBytes: 256 * 1024});
		const padding = 'x'.repeat(1000);
		logging.logger.warn(`0 ${padding}`);
		await waitFor(() => reports.length > 0, 2000, 2);
		expect(reports[0]).toContain('ENOSPC');
		for (let index = 1; index < 1000; index++) {
			logging.logger.info(`${index} ${padding}`);
		}

		// The last lines gathered go to the backlog too (or are dropped), and its retry fails.
		await logging.flush();
		await delay(50);
		rmSync(filler);
		// Larger than what is left of the backlog: dropped, and so not a write that would retry the
		// held lines. Only the retry a dropped line starts finds the room.
		logging.logger.info(`room ${'y'.repeat(40_000)}`);
		await waitFor(() => outcome().droppedLines !== undefined, 2000, 2);
		const {kept, droppedLines} = outcome();
		expect(kept.map(line => line.msg.split(' ')[0])).not.toContain('room');
		expect(kept.length + droppedLines!).toBe(1001);
	});
});
