/**
The request line, written without pino's serializer, is the line pino would write. The log file
target: `info` lines wait to go out in one write (for `logFlushMs` or until `logBatchBytes` have
gathered), warnings go out at once, and `flush()` leaves nothing behind. Lines are encoded into
the batch as they come: none is cut, reordered or mis-encoded at a batch's edge.
*/
import {pbkdf2} from 'node:crypto';
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {setTimeout as delay} from 'node:timers/promises';
import {afterEach, describe, expect, it} from 'vitest';
import {createLogging, logBatchBytes, logFlushMs, type RequestFields} from '../../src/logger.js';
import {waitFor} from '../helpers/daemon.js';

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

async function fileLogging() {
	const directory = mkdtempSync(path.join(tmpdir(), 'pam-authservice-logger-'));
	directories.push(directory);
	const file = path.join(directory, 'log');
	const logging = createLogging({level: 'info', target: {kind: 'file', path: file}});
	await logging.ready;
	const messages = (): string[] => {
		try {
			return readFileSync(file, 'utf8').split('\n').filter(Boolean).map(line => (JSON.parse(line) as {msg: string}).msg);
		} catch {
			return [];
		}
	};

	return {logging, messages};
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
