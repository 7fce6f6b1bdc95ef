/**
Hostile input against the built daemon: arbitrary byte streams, cut anywhere, never crash it and
never yield `ok` except for an exact valid request. `HOSTILE_RUNS` sets the number of cases
(`npm run fuzz` runs a million).
*/
import fc from 'fast-check';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {alice, services, users} from '../fixtures/users.js';
import {closedByServer, connect, Daemon, readLines, rememberPassword} from '../helpers/daemon.js';

const runs = Number(process.env['HOSTILE_RUNS'] ?? 10_000);
const maxLineBytes = 256;
const valid = `${alice.user}\r${alice.password}\rx2gobroker`;

let daemon: Daemon;

beforeAll(async () => {
	rememberPassword(alice.password);
	// No throttle: thousands of wrong guesses for alice would otherwise be held back for minutes.
	daemon = await Daemon.start({users, services, args: [
		'--max-line-bytes', String(maxLineBytes),
		'--max-user-bytes', '64',
		'--max-password-bytes', '128',
		'--free-failures', '100000000',
		'--failure-budget-burst', '100000000',
		'--failure-budget-per-second', '100000000',
		'--max-requests-per-connection', '4096',
		'--max-connections-per-uid', '4096',
		'--max-waiting-per-key', '10000',
	]});
});

afterAll(async () => {
	await daemon?.stop();
});

/** What the daemon must answer for a stream, by the protocol's rules alone. */
function expectedAnswers(stream: Buffer): {answers: string[]; closes: boolean} {
	const answers: string[] = [];
	let start = 0;
	for (;;) {
		const end = stream.indexOf(0x0A, start);
		const length = (end === -1 ? stream.length : end) - start;
		if (length > maxLineBytes) {
			answers.push('fail');
			return {answers, closes: true};
		}

		if (end === -1) {
			return {answers, closes: false};
		}

		answers.push(stream.subarray(start, end).equals(Buffer.from(valid)) ? 'ok' : 'fail');
		start = end + 1;
	}
}

const piece = fc.oneof(
	{weight: 3, arbitrary: fc.constantFrom(`${valid}\n`, `${alice.user}\rwrong-Pa55-fuzzed\rx2gobroker\n`, '\r', '\n', '\0', '\r\n', 'x2gobroker', 'alice', '\r\r\n')},
	{weight: 3, arbitrary: fc.uint8Array({maxLength: 40}).map(bytes => Buffer.from(bytes))},
	{weight: 1, arbitrary: fc.constantFrom(Buffer.from([0xFF]), Buffer.from([0xC3]), Buffer.from([0xED, 0xA0, 0x80]), Buffer.from('é'))},
	{weight: 1, arbitrary: fc.integer({min: 1, max: 400}).map(length => 'p'.repeat(length))},
);

describe('arbitrary byte streams', () => {
	it(`answer exactly as the protocol says, whatever the bytes and the cuts (${runs} cases)`, async () => {
		await fc.assert(fc.asyncProperty(fc.array(piece, {maxLength: 12}), fc.array(fc.integer({min: 1, max: 64}), {minLength: 1, maxLength: 8}), async (pieces, cuts) => {
			const stream = Buffer.concat(pieces.map(part => Buffer.from(part)));
			const expected = expectedAnswers(stream);
			const socket = await connect(daemon.socketPath);
			const answers = readLines(socket, expected.answers.length, 10_000);
			let offset = 0;
			for (let index = 0; offset < stream.length; index++) {
				const size = cuts[index % cuts.length]!;
				socket.write(stream.subarray(offset, offset + size));
				offset += size;
			}

			socket.end();
			expect(await answers).toEqual(expected.answers);
			socket.destroy();
		}), {numRuns: runs});
		expect(daemon.exitCode).toBeUndefined();
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	}, Math.max(120_000, runs * 20));
});

describe('named hostile cases', () => {
	it.each([
		['NUL in the user', `al\0ice\r${alice.password}\rx2gobroker\n`],
		['NUL in the service', `alice\r${alice.password}\rx2go\0broker\n`],
		['NUL at the end of the password', `alice\r${alice.password}\0\rx2gobroker\n`],
		['a password over its limit', `alice\r${alice.password}${'x'.repeat(200)}\rx2gobroker\n`],
		['a service over its limit', `alice\r${alice.password}\r${'s'.repeat(65)}\n`],
		['\\r\\n line ending', `${valid}\r\n`],
		['a missing service', `alice\r${alice.password}\n`],
		['an extra field', `${valid}\rmore\n`],
		['a leading \\r', `\r${valid}\n`],
	])('%s: fail', async (_name, request) => {
		expect(await daemon.send(request)).toEqual(['fail']);
	});

	it('a half-closed connection with an unfinished request: closed, no answer', async () => {
		const socket = await connect(daemon.socketPath);
		const answers = readLines(socket, 1, 2000);
		socket.end(`${valid}`);
		expect(await answers).toEqual([]);
		expect(await closedByServer(socket)).toBe(true);
	});

	it('a thousand clients that vanish mid-request leave the daemon serving', async () => {
		// In waves of 100: more at once would overflow the listen backlog, which is the kernel's business.
		for (let wave = 0; wave < 10; wave++) {
			// eslint-disable-next-line no-await-in-loop
			await Promise.all(Array.from({length: 100}, async (_, index) => {
				const socket = await connect(daemon.socketPath);
				socket.on('error', () => {});
				socket.write(index % 2 ? `${valid}\n` : valid.slice(0, index % valid.length));
				socket.destroy();
			}));
		}

		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	});
});
