/**
The log file target: `info` lines wait to go out in one write, warnings go out at once, and
`flush()` leaves nothing behind.
*/
import {mkdtempSync, readFileSync, rmSync} from 'node:fs';
import {tmpdir} from 'node:os';
import path from 'node:path';
import {setTimeout as delay} from 'node:timers/promises';
import {afterEach, describe, expect, it} from 'vitest';
import {createLogging, logFlushMs} from '../../src/logger.js';

const directories: string[] = [];

afterEach(() => {
	for (const directory of directories.splice(0)) {
		rmSync(directory, {recursive: true, force: true});
	}
});

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

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<number> {
	const started = Date.now();
	while (!condition()) {
		if (Date.now() - started > timeoutMs) {
			throw new Error(`not within ${timeoutMs} ms`);
		}

		// eslint-disable-next-line no-await-in-loop
		await delay(2);
	}

	return Date.now() - started;
}

describe('the log file', () => {
	it('holds info lines back for at most logFlushMs, then writes them together', async () => {
		const {messages, logging} = await fileLogging();
		logging.logger.info('one');
		logging.logger.info('two');
		logging.logger.info('three');
		await delay(logFlushMs / 4);
		expect(messages()).toEqual([]);
		await waitFor(() => messages().length === 3, 2000);
		expect(messages()).toEqual(['one', 'two', 'three']);
	});

	it('writes a warning at once, with the info lines before it, in order', async () => {
		const {messages, logging} = await fileLogging();
		logging.logger.info('before');
		logging.logger.warn('trouble');
		const tookMs = await waitFor(() => messages().length === 2, 2000);
		expect(messages()).toEqual(['before', 'trouble']);
		expect(tookMs).toBeLessThan(logFlushMs);
	});

	it('leaves nothing behind after flush()', async () => {
		const {messages, logging} = await fileLogging();
		logging.logger.info('last words');
		logging.flush();
		expect(messages()).toEqual(['last words']);
	});
});
