/**
The built daemon on a real PAM stack (pam_wrapper + pam_matrix): the wire protocol and the PAM
check, end to end.
*/
import {setTimeout as delay} from 'node:timers/promises';
import {afterAll, beforeAll, describe, expect, it} from 'vitest';
import {alice, carol, dave, sam, services, users, wrongPassword} from '../fixtures/users.js';
import {closedByServer, connect, Daemon, readLines, rememberPassword, requestLine as line} from '../helpers/daemon.js';

let daemon: Daemon;

beforeAll(async () => {
	daemon = await Daemon.start({users, services});
});

afterAll(async () => {
	await daemon?.stop();
});

describe('the PAM check', () => {
	it('answers ok for the right password and fail for a wrong one or an unknown user', async () => {
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
		expect(await daemon.ask(alice.user, wrongPassword)).toBe('fail');
		expect(await daemon.ask('nobody-here', alice.password)).toBe('fail');
	});

	it('answers fail when the account section denies, though the password is right', async () => {
		expect(await daemon.ask(dave.user, dave.password, 'denied')).toBe('fail');
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && entry['user'] === 'dave');
		expect(log['reason']).toMatch(/^pam_acct_mgmt: /);
	});

	it('never truncates a password: 127 right bytes plus one, and 512 bytes, fail', async () => {
		expect(Buffer.byteLength(carol.password)).toBe(127);
		expect(await daemon.ask(carol.user, carol.password)).toBe('ok');
		expect(await daemon.ask(carol.user, `${carol.password}X`)).toBe('fail');
		expect(await daemon.ask(carol.user, `${carol.password}${'X'.repeat(385)}`)).toBe('fail');
	});

	it('tells the caller only ok or fail, and the log the reason', async () => {
		expect(await daemon.ask(alice.user, 'another-wrong-Pa55')).toBe('fail');
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && entry['user'] === 'alice' && entry['result'] === 'fail');
		expect(log).toMatchObject({service: 'x2gobroker', level: 'info'});
		expect(log['reason']).toMatch(/^pam_authenticate: /);
		expect(typeof log['durationMs']).toBe('number');
		expect(typeof log['request']).toBe('number');
	});
});

describe('requests PAM never sees', () => {
	it.each([
		['a line ending in \\r\\n (a fourth, empty field)', `alice\r${alice.password}\rx2gobroker\r\n`, 'malformed: expected 3 fields, got 4'],
		['two fields', `alice\r${alice.password}\n`, 'malformed: expected 3 fields, got 2'],
		['four fields', `alice\r${alice.password}\rx2gobroker\rextra\n`, 'malformed: expected 3 fields, got 4'],
		['an empty password', 'alice\r\rx2gobroker\n', 'malformed: empty password'],
		['an empty user', `\r${alice.password}\rx2gobroker\n`, 'malformed: empty user'],
		['a NUL in the password', `alice\r${alice.password}\0junk\rx2gobroker\n`, 'malformed: NUL byte in password'],
		['a user over 256 bytes', `${'u'.repeat(257)}\r${alice.password}\rx2gobroker\n`, 'malformed: user longer than 256 bytes'],
		['a service not on the allow-list', `alice\r${alice.password}\rsshd\n`, 'service not allowed'],
	])('answers fail for %s', async (_name, request, reason) => {
		rememberPassword(alice.password);
		// Lines of earlier tests' requests may still be on their way.
		await daemon.settled();
		const before = daemon.requestLogs.length;
		expect(await daemon.send(request)).toEqual(['fail']);
		const log = await daemon.waitForLog(entry => entry.msg === 'request' && daemon.requestLogs.indexOf(entry) >= before);
		expect(log['reason']).toBe(reason);
		expect(log['workerPid']).toBeUndefined();
	});

	it('answers fail for invalid UTF-8', async () => {
		const request = Buffer.concat([Buffer.from('alice\r'), Buffer.from([0xFF, 0xFE]), Buffer.from('\rx2gobroker\n')]);
		expect(await daemon.send(request)).toEqual(['fail']);
	});
});

describe('connections', () => {
	it('answers many requests on one connection, written in one go, in order', async () => {
		const requests = [
			line(alice.user, alice.password),
			line(alice.user, wrongPassword),
			'garbage\n',
			line(carol.user, carol.password),
		];
		expect(await daemon.send(requests.join(''))).toEqual(['ok', 'fail', 'fail', 'ok']);
	});

	it('reads a request written one byte at a time', async () => {
		const bytes = [...Buffer.from(line(alice.user, alice.password) + line(alice.user, wrongPassword))].map(byte => Buffer.from([byte]));
		const socket = await connect(daemon.socketPath);
		const answers = readLines(socket, 2);
		for (const byte of bytes) {
			socket.write(byte);
			// Let each byte arrive as its own read.
			// eslint-disable-next-line no-await-in-loop
			await delay(1);
		}

		expect(await answers).toEqual(['ok', 'fail']);
		socket.destroy();
	});

	it('answers in request order even when a later check finishes first', async () => {
		const started = Date.now();
		const answers = await daemon.send(line(sam.user, sam.password, 'slow') + line(alice.user, wrongPassword) + line(alice.user, alice.password));
		expect(answers).toEqual(['ok', 'fail', 'ok']);
		expect(Date.now() - started).toBeGreaterThanOrEqual(900);
	});

	it('keeps the connection open after answering, for the next request', async () => {
		const socket = await connect(daemon.socketPath);
		socket.write(line(alice.user, alice.password));
		expect(await readLines(socket, 1)).toEqual(['ok']);
		socket.write(line(alice.user, wrongPassword));
		expect(await readLines(socket, 1)).toEqual(['fail']);
		socket.destroy();
	});

	it('answers what a half-closed connection asked, then closes', async () => {
		const socket = await connect(daemon.socketPath);
		const answers = readLines(socket, 2);
		socket.end(line(sam.user, sam.password, 'slow') + line(alice.user, alice.password));
		expect(await answers).toEqual(['ok', 'ok']);
		expect(await closedByServer(socket)).toBe(true);
	});

	it('survives a client that vanishes before its answer', async () => {
		const socket = await connect(daemon.socketPath);
		socket.write(line(sam.user, sam.password, 'slow'));
		await delay(50);
		socket.destroy();
		expect(await daemon.ask(alice.user, alice.password)).toBe('ok');
	});
});
