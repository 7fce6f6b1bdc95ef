/**
Every connection limit, each on a daemon started with a small value of it.
*/
import {setTimeout as delay} from 'node:timers/promises';
import {afterEach, describe, expect, it} from 'vitest';
import {alice, sam, services, slowUsers, users, wrongPassword} from '../fixtures/users.js';
import {closedByServer, connect, Daemon, readLines, requestLine as line} from '../helpers/daemon.js';

const running: Daemon[] = [];

async function start(args: string[], wrapper?: string[]): Promise<Daemon> {
	const daemon = await Daemon.start({users, services, args, ...(wrapper ? {wrapper} : {})});
	running.push(daemon);
	return daemon;
}

afterEach(async () => {
	await Promise.all(running.splice(0).map(async daemon => daemon.stop()));
});

describe('maxLineBytes', () => {
	it('answers fail to a line over the limit and closes the connection, holding no more than the limit', async () => {
		const daemon = await start(['--max-line-bytes', '1024']);
		const socket = await connect(daemon.socketPath);
		const answers = readLines(socket, 2);
		socket.write(line(alice.user, alice.password));
		// No newline: the daemon must not wait for one, nor buffer all of it.
		socket.write(`alice\r${'p'.repeat(2000)}`);
		expect(await answers).toEqual(['ok', 'fail']);
		expect(await closedByServer(socket)).toBe(true);
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && String(entry['reason']).includes('line longer'));
		expect(log['reason']).toBe('malformed: line longer than 1024 bytes');
	});

	it('takes a line of exactly the limit, and not one byte more', async () => {
		const daemon = await start(['--max-line-bytes', '800', '--max-user-bytes', '300']);
		const user = 'u'.repeat(800 - 511 - 'x2gobroker'.length - 2);
		const exact = `${user}\r${'p'.repeat(511)}\rx2gobroker`;
		expect(Buffer.byteLength(exact)).toBe(800);
		expect(await daemon.send(`${exact}\n`)).toEqual(['fail']);
		// Refused by PAM (no such user), not by the line limit.
		await daemon.waitForLog(entry => entry.msg === 'request' && /^pam_(authenticate|acct_mgmt): /.test(String(entry['reason'])));
		expect(await daemon.send(`u${exact}\n`)).toEqual(['fail']);
		await daemon.waitForLog(entry => entry['reason'] === 'malformed: line longer than 800 bytes');
	});
});

describe('idleTimeoutMs', () => {
	it('closes a connection that sends no complete request in time, and keeps a busy one', async () => {
		const daemon = await start(['--idle-timeout-ms', '300']);
		const idle = await connect(daemon.socketPath);
		idle.write('alice\rhalf a request');
		const busy = await connect(daemon.socketPath);
		const answers = readLines(busy, 1, 5000);
		busy.write(line(sam.user, sam.password, 'slow'));
		expect(await closedByServer(idle, 2000)).toBe(true);
		// The slow check takes a second, longer than the idle timeout: its connection stays.
		expect(await answers).toEqual(['ok']);
		busy.destroy();
	});

	it('counts from the last request or answer: a connection that keeps asking stays open', async () => {
		const daemon = await start(['--idle-timeout-ms', '500']);
		const socket = await connect(daemon.socketPath);
		const closed = closedByServer(socket, 8000);
		let open = true;
		void closed.then(() => {
			open = false;
		});
		// 1.5 s, three idle time-outs, a request every 100 ms (a margin of 400 ms for a busy machine).
		let lastAnswerAt = 0;
		for (let round = 0; round < 15; round++) {
			const answer = readLines(socket, 1);
			socket.write(line(alice.user, alice.password));
			// eslint-disable-next-line no-await-in-loop
			expect(await answer).toEqual(['ok']);
			lastAnswerAt = performance.now();
			// eslint-disable-next-line no-await-in-loop
			await delay(100);
			expect(open).toBe(true);
		}

		expect(await closed).toBe(true);
		// The daemon's idle time starts when it writes the answer, a little before it reaches us:
		// the time-out, less an allowance for that delivery.
		const idleMs = performance.now() - lastAnswerAt;
		expect(idleMs).toBeGreaterThanOrEqual(450);
		expect(idleMs).toBeLessThan(3000);
	});
});

describe('maxConnections', () => {
	it('makes room for a new caller by closing the longest-idle connection', async () => {
		const daemon = await start(['--max-connections', '3']);
		const idle = [];
		for (let index = 0; index < 3; index++) {
			// eslint-disable-next-line no-await-in-loop
			idle.push(await connect(daemon.socketPath));
			// eslint-disable-next-line no-await-in-loop
			await delay(20);
		}

		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect(await closedByServer(idle[0]!, 2000)).toBe(true);
		expect(idle[2]!.destroyed).toBe(false);
		await daemon.waitForLog(entry => entry.msg.includes('longest-idle'));
		for (const socket of idle) {
			socket.destroy();
		}
	});

	it('closes a new connection when none is idle, and answers the busy ones', async () => {
		const daemon = await start(['--max-connections', '2']);
		const busy = await Promise.all([connect(daemon.socketPath), connect(daemon.socketPath)]);
		const answers = busy.map(async (socket, index) => {
			const result = readLines(socket, 1, 5000);
			socket.write(line(slowUsers[index]!.user, slowUsers[index]!.password, 'slow'));
			return result;
		});
		await delay(200);
		const extra = await connect(daemon.socketPath);
		expect(await closedByServer(extra, 2000)).toBe(true);
		expect(await Promise.all(answers)).toEqual([['ok'], ['ok']]);
		await daemon.waitForLog(entry => entry.msg.includes('no connection is idle'));
		for (const socket of busy) {
			socket.destroy();
		}
	});
});

describe('the open-files limit', () => {
	it('keeps maxConnections below it, and survives a flood past it', async () => {
		const daemon = await start(['--max-connections', '1024', '--max-connections-per-uid', '100000'], ['prlimit', '--nofile=300:300']);
		const lowered = await daemon.waitForLog(entry => entry.msg.startsWith('maxConnections lowered'));
		// 300 descriptors less three a worker (32) and 64 for the rest.
		expect(lowered['maxConnections']).toBe(140);
		const flood = [];
		for (let wave = 0; wave < 4; wave++) {
			// eslint-disable-next-line no-await-in-loop
			flood.push(...await Promise.all(Array.from({length: 100}, async () => {
				const socket = await connect(daemon.socketPath);
				socket.on('error', () => {});
				return socket;
			})));
		}

		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect(daemon.exitCode).toBeUndefined();
		for (const socket of flood) {
			socket.destroy();
		}
	});
});

describe('maxRequestsPerConnection', () => {
	it('stops reading a connection with that many checks in flight, and answers all in order', async () => {
		const daemon = await start(['--max-requests-per-connection', '2']);
		const started = Date.now();
		const answers = await daemon.send(slowUsers.slice(0, 3).map(({user, password}) => line(user, password, 'slow')).join('') + line(alice.user, wrongPassword));
		expect(answers).toEqual(['ok', 'ok', 'ok', 'fail']);
		// Two rounds of one-second checks, not one: the third waited for a free place.
		expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
	});
});

describe('maxQueuedChecks', () => {
	it('answers fail at once when every worker is busy and the queue is full', async () => {
		const daemon = await start(['--max-workers', '1', '--min-workers', '1', '--max-queued-checks', '1']);
		const started = Date.now();
		const slow = slowUsers.slice(0, 2).map(async ({user, password}) => daemon.ask(user, password, 'slow'));
		await delay(200);
		expect(await daemon.ask(alice.user, alice.password)).toBe('fail');
		expect(Date.now() - started).toBeLessThan(900);
		expect(await Promise.all(slow)).toEqual(['ok', 'ok']);
		await daemon.waitForLog(entry => entry.msg.includes('queue full'));
	});
});
