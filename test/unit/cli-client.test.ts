import {linkSync, mkdtempSync, rmSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {PassThrough, Writable} from 'node:stream';
import {setTimeout as delay} from 'node:timers/promises';
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest';
import {exitCodes, main, type CliIo, type InputStream} from '../../src/cli/client.js';

/** A throw-away daemon: answers `ok` to the password `secret`, unless told otherwise. */
type FakeServer = {
	readonly socketPath: string;
	readonly received: Buffer[];
	readonly sockets: net.Socket[];
	close(): Promise<void>;
};

type Respond = (line: string, socket: net.Socket) => void;

const byPassword: Respond = (line, socket) => {
	socket.write(line.split('\r')[1] === 'secret' ? 'ok\n' : 'fail\n');
};

let directory: string;
let servers: FakeServer[] = [];
let counter = 0;

beforeAll(() => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-cli-'));
});

afterEach(async () => {
	await Promise.all(servers.map(async server => server.close()));
	servers = [];
});

afterAll(() => {
	rmSync(directory, {recursive: true, force: true});
});

function freshPath(): string {
	return path.join(directory, `socket-${counter++}`);
}

async function startServer(respond: Respond = byPassword, options: {closeOnEnd?: boolean} = {}): Promise<FakeServer> {
	const socketPath = freshPath();
	const received: Buffer[] = [];
	const sockets: net.Socket[] = [];
	const server = net.createServer({allowHalfOpen: !options.closeOnEnd}, socket => {
		const index = sockets.push(socket) - 1;
		received[index] = Buffer.alloc(0);
		let pending = '';
		socket.on('error', () => {});
		socket.on('data', chunk => {
			received[index] = Buffer.concat([received[index]!, chunk]);
			pending += chunk.toString();
			for (let end = pending.indexOf('\n'); end !== -1; end = pending.indexOf('\n')) {
				respond(pending.slice(0, end), socket);
				pending = pending.slice(end + 1);
			}
		});
	});
	await new Promise<void>(resolve => server.listen(socketPath, resolve));
	const fake: FakeServer = {
		socketPath,
		received,
		sockets,
		async close() {
			for (const socket of sockets) {
				socket.destroy();
			}

			await new Promise(resolve => server.close(resolve));
		},
	};
	servers.push(fake);
	return fake;
}

class Output extends Writable {
	text = '';

	override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
		this.text += chunk.toString();
		callback();
	}
}

type FakeIo = CliIo & {readonly stdin: PassThrough & InputStream; readonly stdout: Output; readonly stderr: Output};

function fakeIo(input?: string | string[], env: NodeJS.ProcessEnv = {}): FakeIo {
	const stdin = new PassThrough();
	if (input !== undefined) {
		for (const chunk of Array.isArray(input) ? input : [input]) {
			stdin.write(chunk);
		}

		stdin.end();
	}

	return {stdin, stdout: new Output(), stderr: new Output(), env};
}

/** A terminal that is typed on, chunk after chunk, once it is in raw mode. */
function fakeTerminal(keystrokes: string[]): FakeIo & {readonly rawModes: boolean[]} {
	const io = fakeIo();
	const rawModes: boolean[] = [];
	Object.assign(io.stdin, {
		isTTY: true,
		setRawMode(mode: boolean) {
			rawModes.push(mode);
			if (mode) {
				void (async () => {
					for (const keys of keystrokes) {
						await delay(2);
						io.stdin.write(keys);
					}
				})();
			}

			return io.stdin;
		},
	});
	return Object.assign(io, {rawModes});
}

function lines(text: string): string[] {
	return text.split('\n').filter(Boolean);
}

describe('check', () => {
	it('prints ok and exits 0 for a right password from stdin', async () => {
		const server = await startServer();
		const io = fakeIo('secret\n');
		await expect(main(['check', '--user', 'alice', '--socket', server.socketPath, '--password-stdin'], io)).resolves.toBe(exitCodes.ok);
		expect(io.stdout.text).toBe('ok\n');
		expect(io.stderr.text).toBe('');
		expect(server.received[0]?.toString()).toBe('alice\rsecret\rx2gobroker\n');
	});

	it('prints fail and exits 1 for a wrong one', async () => {
		const server = await startServer();
		const io = fakeIo('wrong\n');
		await expect(main(['check', '--user', 'alice', '--socket', server.socketPath, '--password-stdin'], io)).resolves.toBe(exitCodes.fail);
		expect(io.stdout.text).toBe('fail\n');
	});

	it.each([
		['secret\r\n', 'secret'],
		['secret', 'secret'],
		['secret\nmore\n', 'secret'],
		[['sec', 'ret', '\nignored'], 'secret'],
		['pass word\r\r\n', 'pass word\r'],
	])('reads the first line of stdin %j', async (input, password) => {
		const server = await startServer((_line, socket) => socket.write('ok\n'));
		const io = fakeIo(input);
		const code = await main(['check', '--user', 'alice', '--service', 'login', '--socket', server.socketPath, '--password-stdin'], io);
		if (password.includes('\r')) {
			expect(code).toBe(exitCodes.usage);
			expect(server.received).toEqual([]);
		} else {
			expect(code).toBe(exitCodes.ok);
			expect(server.received[0]?.toString()).toBe(`alice\r${password}\rlogin\n`);
		}
	});

	it('finds the socket through X2GOBROKER_AUTHSERVICE_SOCKET', async () => {
		const server = await startServer();
		const io = fakeIo('secret\n', {X2GOBROKER_AUTHSERVICE_SOCKET: server.socketPath});
		await expect(main(['check', '-u', 'alice', '--password-stdin'], io)).resolves.toBe(exitCodes.ok);
	});

	it('exits 3 with one readable line when the socket is missing, never showing the password', async () => {
		const socketPath = freshPath();
		const io = fakeIo('hunter2\n');
		await expect(main(['check', '--user', 'alice', '--socket', socketPath, '--password-stdin'], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(io.stderr.text).toBe(`pam-authservice: cannot reach ${socketPath}: no such file (is pam-authserviced running?)\n`);
		expect(io.stdout.text).toBe('');
	});

	it('exits 3 for a stale socket', async () => {
		const server = await startServer();
		const stalePath = freshPath();
		linkSync(server.socketPath, stalePath);
		await server.close();
		const io = fakeIo('hunter2\n');
		await expect(main(['check', '--user', 'alice', '--socket', stalePath, '--password-stdin'], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(lines(io.stderr.text)).toEqual([`pam-authservice: cannot reach ${stalePath}: connection refused (a stale socket file: is pam-authserviced running?)`]);
	});

	it('exits 3 when no answer comes in time', async () => {
		const server = await startServer(() => {});
		const io = fakeIo('hunter2\n');
		await expect(main(['check', '--user', 'alice', '--socket', server.socketPath, '--timeout', '50', '--password-stdin'], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(io.stderr.text).toBe(`pam-authservice: no answer from ${server.socketPath} within 50 ms\n`);
	});

	it('exits 3 on a broken answer, without quoting it', async () => {
		const server = await startServer((line, socket) => socket.write(`${line}\n`));
		const io = fakeIo('hunter2\n');
		await expect(main(['check', '--user', 'alice', '--socket', server.socketPath, '--password-stdin'], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(lines(io.stderr.text)).toHaveLength(1);
		expect(io.stderr.text).not.toContain('hunter2');
	});

	describe('usage errors exit 2 with one line and a hint', () => {
		it.each([
			[['check', '--password-stdin'], 'missing required argument: user'],
			[['check', '--user', 'alice', '--frobnicate', '--password-stdin'], 'unknown option --frobnicate'],
			[['check', '--user', 'alice', '--password', 'hunter2'], 'passwords are never taken as arguments'],
			[['check', '--user', 'alice', '--password=hunter2'], 'passwords are never taken as arguments'],
			[['check', '--user', 'alice', '-p', 'hunter2'], 'passwords are never taken as arguments'],
			[['check', '--user', 'alice', 'hunter2', '--password-stdin'], 'unexpected argument (not shown, in case it is a password)'],
			[['frobnicate'], 'unknown command: the commands are check and raw'],
			[[], 'name a command: check or raw'],
			[['check', '--user', 'alice', '--timeout', 'soon', '--password-stdin'], 'the `--timeout` option must be a whole number of milliseconds'],
			[['check', '--user', 'alice', '--timeout', '0', '--password-stdin'], 'the `--timeout` option must be a whole number of milliseconds'],
			[['check', '--user', '', '--password-stdin'], 'The `user` field cannot be empty'],
			[['check', '--user', 'alice', '--service', 'a\rb', '--password-stdin'], 'The `service` field cannot contain a carriage return'],
		])('%j', async (argv, message) => {
			const server = await startServer();
			const io = fakeIo('hunter2\n');
			await expect(main([...argv, '--socket', server.socketPath], io)).resolves.toBe(exitCodes.usage);
			const [first, hint, ...rest] = lines(io.stderr.text);
			expect(first).toContain(`pam-authservice: ${message}`);
			expect(hint).toBe('Try \'pam-authservice --help\' for the options.');
			expect(rest).toEqual([]);
			expect(io.stderr.text).not.toContain('hunter2');
			expect(io.stdout.text).toBe('');
			expect(server.sockets).toHaveLength(0);
		});

		it('when stdin is not a terminal and --password-stdin is missing', async () => {
			const io = fakeIo('hunter2\n');
			await expect(main(['check', '--user', 'alice'], io)).resolves.toBe(exitCodes.usage);
			expect(lines(io.stderr.text)[0]).toBe('pam-authservice: standard input is not a terminal: give the password on its first line with --password-stdin');
		});

		it('for an empty password', async () => {
			const server = await startServer();
			const io = fakeIo('\n');
			await expect(main(['check', '--user', 'alice', '--socket', server.socketPath, '--password-stdin'], io)).resolves.toBe(exitCodes.usage);
			expect(lines(io.stderr.text)[0]).toBe('pam-authservice: The `password` field cannot be empty');
			expect(server.sockets).toHaveLength(0);
		});
	});

	it('prints help on --help and exits 0', async () => {
		const io = fakeIo();
		await expect(main(['--help'], io)).resolves.toBe(exitCodes.ok);
		expect(io.stdout.text).toContain('check');
		expect(io.stdout.text).toContain('raw');
		const checkIo = fakeIo();
		await expect(main(['check', '--help'], checkIo)).resolves.toBe(exitCodes.ok);
		expect(checkIo.stdout.text).toContain('--password-stdin');
		expect(checkIo.stdout.text).not.toMatch(/--password\b(?!-)/);
	});

	describe('on a terminal', () => {
		it('asks without echo, with backspace', async () => {
			const server = await startServer();
			const io = fakeTerminal(['sec', 'x', '\u007F', 'ä\b', 'ret', '\r']);
			await expect(main(['check', '--user', 'alice', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.ok);
			expect(io.stderr.text).toBe('Password: \n');
			expect(io.rawModes).toEqual([true, false]);
			expect(server.received[0]?.toString()).toBe('alice\rsecret\rx2gobroker\n');
			expect(io.stdout.text).toBe('ok\n');
		});

		it('clears the line on Ctrl-U', async () => {
			const server = await startServer();
			const io = fakeTerminal(['wrong', '\u0015', 'secret\n']);
			await expect(main(['check', '--user', 'alice', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.ok);
		});

		it('exits 130 on Ctrl-C without connecting', async () => {
			const server = await startServer();
			const io = fakeTerminal(['sec', '\u0003']);
			await expect(main(['check', '--user', 'alice', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.interrupted);
			expect(io.rawModes).toEqual([true, false]);
			await delay(20);
			expect(server.sockets).toHaveLength(0);
		});
	});
});

describe('raw', () => {
	it('passes two pipelined requests through and prints both answers', async () => {
		const server = await startServer();
		const io = fakeIo('alice\rsecret\rx2gobroker\nbob\rwrong\rx2gobroker\n');
		await expect(main(['raw', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.ok);
		expect(io.stdout.text).toBe('ok\nfail\n');
		expect(io.stderr.text).toBe('');
		expect(server.received[0]?.toString()).toBe('alice\rsecret\rx2gobroker\nbob\rwrong\rx2gobroker\n');
	});

	it('passes requests split across chunks, and waits for late answers', async () => {
		const server = await startServer((line, socket) => {
			setTimeout(() => byPassword(line, socket), 30);
		});
		const io = fakeIo(['alice\rsec', 'ret\rx2gobroker\nbob', '\rsecret\rx2gobroker\n']);
		await expect(main(['raw', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.ok);
		expect(io.stdout.text).toBe('ok\nok\n');
	});

	it('finishes when a server closes after the client half-closes', async () => {
		const server = await startServer(byPassword, {closeOnEnd: true});
		const io = fakeIo('alice\rsecret\rx2gobroker\n');
		await expect(main(['raw', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.ok);
		expect(io.stdout.text).toBe('ok\n');
	});

	it('exits 3 when the server does not answer in time', async () => {
		const server = await startServer(() => {});
		const io = fakeIo('alice\rsecret\rx2gobroker\n');
		await expect(main(['raw', '--socket', server.socketPath, '--timeout', '50'], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(io.stderr.text).toBe(`pam-authservice: no answer from ${server.socketPath} within 50 ms: 1 of 1 requests unanswered\n`);
	});

	it('exits 3 when the server closes before answering', async () => {
		const server = await startServer((_line, socket) => socket.destroy());
		const io = fakeIo('alice\rsecret\rx2gobroker\n');
		await expect(main(['raw', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(lines(io.stderr.text)).toHaveLength(1);
		expect(io.stderr.text).not.toContain('secret');
	});

	it('exits 3 when it cannot connect', async () => {
		const socketPath = freshPath();
		const io = fakeIo('alice\rsecret\rx2gobroker\n');
		await expect(main(['raw', '--socket', socketPath], io)).resolves.toBe(exitCodes.cannotAsk);
		expect(io.stderr.text).toBe(`pam-authservice: cannot reach ${socketPath}: no such file (is pam-authserviced running?)\n`);
	});

	it('exits 0 at once for empty input', async () => {
		const server = await startServer();
		const io = fakeIo('');
		await expect(main(['raw', '--socket', server.socketPath], io)).resolves.toBe(exitCodes.ok);
		expect(io.stdout.text).toBe('');
	});
});

it('sets no process exit code when imported', () => {
	expect(process.exitCode).toBeUndefined();
});
