import {linkSync, mkdtempSync, rmSync, writeFileSync, chmodSync} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {setTimeout as delay} from 'node:timers/promises';
import fc from 'fast-check';
import {afterAll, afterEach, beforeAll, describe, expect, it, vi} from 'vitest';
import {
	AbortError,
	authenticate,
	AuthServiceClient,
	AuthServiceError,
	ClosedWithoutAnswerError,
	ConnectionFailedError,
	ConnectionRefusedError,
	defaultSocketPath,
	errorCodes,
	InvalidFieldError,
	PermissionDeniedError,
	ProtocolError,
	resolveSocketPath,
	SocketMissingError,
	TimeoutError,
} from '../../src/index.js';
import {connectErrorFor} from '../../src/errors.js';

const isRoot = process.getuid?.() === 0;

/** What the fake server does with one request line (without its `\n`). */
type Respond = (line: string, socket: net.Socket, server: FakeServer) => void;

/** Answers `ok` to the password `secret`, `fail` to any other. */
const byPassword: Respond = (line, socket) => {
	socket.write(line.split('\r')[1] === 'secret' ? 'ok\n' : 'fail\n');
};

/** A throw-away x2gobroker-authservice that does what each test scripts. */
class FakeServer {
	readonly server = net.createServer();
	readonly sockets: net.Socket[] = [];
	/** Every byte received, per connection. */
	readonly received: Buffer[] = [];
	readonly lines: string[] = [];
	closedByClient = 0;
	respond: Respond;

	constructor(readonly socketPath: string, respond: Respond) {
		this.respond = respond;
		this.server.on('connection', socket => {
			const index = this.sockets.push(socket) - 1;
			this.received[index] = Buffer.alloc(0);
			let pending = '';
			socket.on('data', chunk => {
				this.received[index] = Buffer.concat([this.received[index]!, chunk]);
				pending += chunk.toString('utf8');
				for (let end = pending.indexOf('\n'); end !== -1; end = pending.indexOf('\n')) {
					const line = pending.slice(0, end);
					pending = pending.slice(end + 1);
					this.lines.push(line);
					this.respond(line, socket, this);
				}
			});
			socket.on('end', () => {
				this.closedByClient++;
			});
			socket.on('error', () => {});
		});
	}

	get connections(): number {
		return this.sockets.length;
	}

	async listen(): Promise<this> {
		await new Promise<void>((resolve, reject) => {
			this.server.once('error', reject);
			this.server.listen(this.socketPath, () => {
				this.server.off('error', reject);
				resolve();
			});
		});
		return this;
	}

	async close(): Promise<void> {
		for (const socket of this.sockets) {
			socket.destroy();
		}

		await new Promise(resolve => this.server.close(resolve));
	}
}

let directory: string;
let servers: FakeServer[] = [];
let counter = 0;

beforeAll(() => {
	directory = mkdtempSync(path.join(os.tmpdir(), 'pam-authservice-client-'));
});

afterEach(async () => {
	await Promise.all(servers.map(async server => server.close()));
	servers = [];
	vi.unstubAllEnvs();
});

afterAll(() => {
	rmSync(directory, {recursive: true, force: true});
});

function freshPath(): string {
	return path.join(directory, `socket-${counter++}`);
}

async function startServer(respond: Respond = byPassword): Promise<FakeServer> {
	const server = await new FakeServer(freshPath(), respond).listen();
	servers.push(server);
	return server;
}

async function until(condition: () => boolean, timeoutMs = 2000): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	while (!condition()) {
		if (Date.now() > deadline) {
			throw new Error('condition not met in time');
		}

		await delay(5);
	}
}

describe('resolveSocketPath', () => {
	it('defaults to the x2gobroker path', () => {
		expect(resolveSocketPath({})).toBe('/run/x2gobroker/x2gobroker-authservice.socket');
		expect(defaultSocketPath).toBe('/run/x2gobroker/x2gobroker-authservice.socket');
	});

	it('honours X2GOBROKER_AUTHSERVICE_SOCKET unless it is empty', () => {
		expect(resolveSocketPath({X2GOBROKER_AUTHSERVICE_SOCKET: '/tmp/x.socket'})).toBe('/tmp/x.socket');
		expect(resolveSocketPath({X2GOBROKER_AUTHSERVICE_SOCKET: ''})).toBe(defaultSocketPath);
	});
});

describe('authenticate', () => {
	it('is true for ok and sends exactly user\\rpassword\\rservice\\n', async () => {
		const server = await startServer();
		await expect(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath})).resolves.toBe(true);
		expect(server.received[0]?.toString()).toBe('alice\rsecret\rx2gobroker\n');
		await until(() => server.closedByClient === 1);
	});

	it('is false for fail', async () => {
		const server = await startServer();
		await expect(authenticate('alice', 'wrong', 'x2gobroker', {socketPath: server.socketPath})).resolves.toBe(false);
	});

	it('sends Buffers and other services as they are', async () => {
		const server = await startServer();
		const password = Buffer.from('secret');
		await expect(authenticate(Buffer.from('jürgen'), password, 'login', {socketPath: server.socketPath})).resolves.toBe(true);
		expect(server.received[0]).toEqual(Buffer.from('jürgen\rsecret\rlogin\n'));
		expect(password.toString()).toBe('secret');
	});

	it('uses one connection a call', async () => {
		const server = await startServer();
		await authenticate('alice', 'secret', undefined, {socketPath: server.socketPath});
		await authenticate('bob', 'secret', undefined, {socketPath: server.socketPath});
		expect(server.connections).toBe(2);
	});

	it('finds the socket through X2GOBROKER_AUTHSERVICE_SOCKET', async () => {
		const server = await startServer();
		vi.stubEnv('X2GOBROKER_AUTHSERVICE_SOCKET', server.socketPath);
		await expect(authenticate('alice', 'secret')).resolves.toBe(true);
	});

	it.each([
		[['o', 'k\n'], true],
		[['f', 'a', 'i', 'l', '\n'], false],
		[['fai', 'l\n'], false],
	])('reads an answer split into chunks %j', async (chunks, expected) => {
		const server = await startServer((_line, socket) => {
			void (async () => {
				for (const chunk of chunks) {
					socket.write(chunk);
					await delay(10);
				}
			})();
		});
		await expect(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath})).resolves.toBe(expected);
	});

	it('sends exactly the request for any fields the protocol can carry', async () => {
		const server = await startServer((_line, socket) => socket.write('ok\n'));
		const field = fc.string({unit: 'binary', minLength: 1, maxLength: 40}).filter(text => !/[\r\n\0]/.test(text));
		await fc.assert(fc.asyncProperty(field, field, field, async (user, password, service) => {
			const before = server.connections;
			await expect(authenticate(user, password, service, {socketPath: server.socketPath})).resolves.toBe(true);
			expect(server.received[before]).toEqual(Buffer.from(`${user}\r${password}\r${service}\n`));
		}), {numRuns: 50});
	});
});

describe('errors', () => {
	async function rejection(promise: Promise<unknown>): Promise<AuthServiceError> {
		const error = await promise.then(() => undefined, (error: unknown) => error);
		expect(error).toBeInstanceOf(AuthServiceError);
		return error as AuthServiceError;
	}

	it('SOCKET_MISSING when there is no socket file', async () => {
		const socketPath = freshPath();
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath}));
		expect(error).toBeInstanceOf(SocketMissingError);
		expect(error.code).toBe(errorCodes.socketMissing);
		expect(error.code).toBe('SOCKET_MISSING');
		expect(error.name).toBe('SocketMissingError');
		expect(error.message).toBe(`Cannot reach ${socketPath}: no such file`);
		expect((error.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
	});

	it('CONNECTION_REFUSED for a stale socket file', async () => {
		const server = await startServer();
		// libuv unlinks the socket when its server closes; a second name keeps the file.
		const stalePath = freshPath();
		linkSync(server.socketPath, stalePath);
		await server.close();
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: stalePath}));
		expect(error).toBeInstanceOf(ConnectionRefusedError);
		expect(error.code).toBe('CONNECTION_REFUSED');
	});

	it('CONNECTION_FAILED for any other errno', async () => {
		const file = freshPath();
		writeFileSync(file, '');
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: path.join(file, 'socket')}));
		expect(error).toBeInstanceOf(ConnectionFailedError);
		expect(error.code).toBe('CONNECTION_FAILED');
		expect((error as ConnectionFailedError).errno).toBe('ENOTDIR');
	});

	it('maps EACCES and EPERM to PERMISSION_DENIED', () => {
		for (const errno of ['EACCES', 'EPERM']) {
			const error = connectErrorFor('/x.socket', Object.assign(new Error(errno), {code: errno}));
			expect(error).toBeInstanceOf(PermissionDeniedError);
			expect(error.code).toBe('PERMISSION_DENIED');
		}
	});

	if (isRoot) {
		console.log('skipping the PERMISSION_DENIED connection test: root may connect to any socket');
	}

	it.skipIf(isRoot)('PERMISSION_DENIED for a socket this user may not use', async () => {
		const server = await startServer();
		chmodSync(server.socketPath, 0o000);
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath}));
		expect(error).toBeInstanceOf(PermissionDeniedError);
		expect(error.code).toBe('PERMISSION_DENIED');
	});

	it('TIMEOUT when no answer comes', async () => {
		const server = await startServer(() => {});
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath, timeoutMs: 100}));
		expect(error).toBeInstanceOf(TimeoutError);
		expect(error.code).toBe('TIMEOUT');
		expect(error.message).toBe(`No answer from ${server.socketPath} within 100 ms`);
		expect(server.lines).toEqual(['alice\rsecret\rx2gobroker']);
		await until(() => server.closedByClient === 1);
	});

	it('CLOSED_WITHOUT_ANSWER when the server closes instead of answering', async () => {
		const server = await startServer((_line, socket) => socket.end());
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath}));
		expect(error).toBeInstanceOf(ClosedWithoutAnswerError);
		expect(error.code).toBe('CLOSED_WITHOUT_ANSWER');
	});

	it('CLOSED_WITHOUT_ANSWER when the server closes after half an answer', async () => {
		const server = await startServer((_line, socket) => socket.end('fa'));
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath}));
		expect(error.code).toBe('CLOSED_WITHOUT_ANSWER');
	});

	it.each([
		['maybe\n'],
		['OK\n'],
		['ok\r\n'],
		['\n'],
		['x'.repeat(100)],
	])('PROTOCOL_ERROR for the answer %j', async answer => {
		const server = await startServer((_line, socket) => socket.write(answer));
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath}));
		expect(error).toBeInstanceOf(ProtocolError);
		expect(error.code).toBe('PROTOCOL_ERROR');
		await until(() => server.closedByClient === 1);
	});

	it('never quotes what the server answered (it might echo the request)', async () => {
		const server = await startServer((line, socket) => socket.write(`${line}\n`));
		const error = await rejection(authenticate('alice', 'hunter2', undefined, {socketPath: server.socketPath}));
		expect(error.code).toBe('PROTOCOL_ERROR');
		expect(error.message).not.toContain('hunter2');
	});

	it('ABORTED before connecting when the signal has fired', async () => {
		const server = await startServer();
		const error = await rejection(authenticate('alice', 'secret', undefined, {socketPath: server.socketPath, signal: AbortSignal.abort('stop')}));
		expect(error).toBeInstanceOf(AbortError);
		expect(error.code).toBe('ABORTED');
		expect(error.cause).toBe('stop');
		await delay(20);
		expect(server.connections).toBe(0);
	});

	it('ABORTED while waiting for the answer', async () => {
		const server = await startServer(() => {});
		const controller = new AbortController();
		const promise = authenticate('alice', 'secret', undefined, {socketPath: server.socketPath, signal: controller.signal});
		await until(() => server.lines.length === 1);
		controller.abort();
		const error = await rejection(promise);
		expect(error.code).toBe('ABORTED');
		await until(() => server.closedByClient === 1);
	});

	it.each([
		['user', ['', 'secret', 'x2gobroker'], 'be empty'],
		['password', ['alice', '', 'x2gobroker'], 'be empty'],
		['service', ['alice', 'secret', ''], 'be empty'],
		['user', ['al\rice', 'secret', 'x2gobroker'], 'contain a carriage return'],
		['password', ['alice', 'sec\rret', 'x2gobroker'], 'contain a carriage return'],
		['password', ['alice', 'sec\nret', 'x2gobroker'], 'contain a line feed'],
		['password', ['alice', 'sec\0ret', 'x2gobroker'], 'contain a NUL byte'],
		['service', ['alice', 'secret', 'x2go\nbroker'], 'contain a line feed'],
		['password', ['alice', Buffer.from('sec\rret'), 'x2gobroker'], 'contain a carriage return'],
		['password', ['alice', Buffer.from([0x73, 0xFF, 0x65]), 'x2gobroker'], 'be bytes that are not UTF-8'],
		['user', [Buffer.alloc(0), 'secret', 'x2gobroker'], 'be empty'],
		['password', ['alice', 'sec\uD800ret', 'x2gobroker'], 'hold a lone UTF-16 surrogate'],
	] as const)('INVALID_FIELD for a bad %s (%j), without connecting', async (field, [user, password, service], problem) => {
		const server = await startServer();
		const error = await rejection(authenticate(user, password, service, {socketPath: server.socketPath}));
		expect(error).toBeInstanceOf(InvalidFieldError);
		expect(error.code).toBe('INVALID_FIELD');
		expect((error as InvalidFieldError).field).toBe(field);
		expect(error.message).toBe(`The \`${field}\` field cannot ${problem}`);
		expect(error.message).not.toContain('sec');
		await delay(20);
		expect(server.connections).toBe(0);
	});

	it('rejects a timeoutMs that setTimeout cannot keep', async () => {
		await expect(authenticate('alice', 'secret', undefined, {timeoutMs: 0})).rejects.toThrow(RangeError);
		await expect(authenticate('alice', 'secret', undefined, {timeoutMs: 2 ** 31})).rejects.toThrow('The `timeoutMs` option');
		expect(() => new AuthServiceClient({timeoutMs: Number.NaN})).toThrow(RangeError);
	});
});

describe('AuthServiceClient', () => {
	let clients: AuthServiceClient[] = [];
	afterEach(async () => {
		await Promise.all(clients.map(async client => client.close()));
		clients = [];
	});

	function client(socketPath: string, timeoutMs?: number): AuthServiceClient {
		const created = new AuthServiceClient({socketPath, ...(timeoutMs === undefined ? {} : {timeoutMs})});
		clients.push(created);
		return created;
	}

	it('pipelines requests on one connection and matches answers in order', async () => {
		// Answers go out in request order, the first one last to be decided.
		const server = await startServer((() => {
			let queue = Promise.resolve();
			const delays = [60, 5, 30, 0];
			let index = 0;
			return (line: string, socket: net.Socket) => {
				const wait = delays[index++ % delays.length]!;
				queue = queue.then(async () => delay(wait)).then(() => {
					byPassword(line, socket, server);
				});
			};
		})());
		const pipelined = client(server.socketPath);
		const results = await Promise.all([
			pipelined.authenticate('alice', 'secret'),
			pipelined.authenticate('bob', 'wrong'),
			pipelined.authenticate('carol', 'secret'),
			pipelined.authenticate('dave', 'nope'),
		]);
		expect(results).toEqual([true, false, true, false]);
		expect(server.connections).toBe(1);
		expect(server.received[0]?.toString()).toBe('alice\rsecret\rx2gobroker\nbob\rwrong\rx2gobroker\ncarol\rsecret\rx2gobroker\ndave\rnope\rx2gobroker\n');
	});

	it('writes every request at once, before any answer', async () => {
		const server = await startServer(() => {});
		const pipelined = client(server.socketPath);
		const answers = [pipelined.authenticate('alice', 'secret'), pipelined.authenticate('bob', 'wrong')];
		await until(() => server.lines.length === 2);
		server.sockets[0]!.write('fail\nok\n');
		await expect(Promise.all(answers)).resolves.toEqual([false, true]);
	});

	it('keeps the connection between requests', async () => {
		const server = await startServer();
		const pipelined = client(server.socketPath);
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		await expect(pipelined.authenticate('alice', 'wrong', 'login')).resolves.toBe(false);
		expect(server.connections).toBe(1);
	});

	it('reconnects after the server closed the connection', async () => {
		const server = await startServer((line, socket, self) => {
			byPassword(line, socket, self);
			socket.end();
		});
		const pipelined = client(server.socketPath);
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		await until(() => server.sockets[0]!.closed);
		await delay(10);
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		expect(server.connections).toBe(2);
	});

	it('rejects every waiting request when the server closes, then reconnects', async () => {
		const server = await startServer((_line, socket, self) => {
			if (self.lines.length === 2) {
				socket.destroy();
			}
		});
		const pipelined = client(server.socketPath);
		const results = await Promise.allSettled([pipelined.authenticate('alice', 'secret'), pipelined.authenticate('bob', 'secret')]);
		expect(results.map(result => result.status === 'rejected' && (result.reason as AuthServiceError).code)).toEqual(['CLOSED_WITHOUT_ANSWER', 'CLOSED_WITHOUT_ANSWER']);
		server.respond = byPassword;
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		expect(server.connections).toBe(2);
	});

	it('rejects with the connect error when it cannot connect, and tries again on the next call', async () => {
		const socketPath = freshPath();
		const pipelined = client(socketPath);
		const results = await Promise.allSettled([pipelined.authenticate('alice', 'secret'), pipelined.authenticate('bob', 'secret')]);
		expect(results.map(result => result.status === 'rejected' && (result.reason as AuthServiceError).code)).toEqual(['SOCKET_MISSING', 'SOCKET_MISSING']);
		const server = await new FakeServer(socketPath, byPassword).listen();
		servers.push(server);
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
	});

	it('on a timeout rejects that request with TIMEOUT, drops the connection, and the others are CLOSED_WITHOUT_ANSWER', async () => {
		const server = await startServer(() => {});
		const pipelined = client(server.socketPath, 100);
		const first = pipelined.authenticate('alice', 'secret');
		await delay(50);
		const second = pipelined.authenticate('bob', 'secret');
		const [firstResult, secondResult] = await Promise.allSettled([first, second]);
		expect(firstResult.status === 'rejected' && firstResult.reason).toBeInstanceOf(TimeoutError);
		const dropped = secondResult.status === 'rejected' && secondResult.reason as AuthServiceError;
		expect(dropped).toBeInstanceOf(ClosedWithoutAnswerError);
		expect((dropped as Error).message).toContain('another request on it timed out');
		expect((dropped as Error).cause).toBeInstanceOf(TimeoutError);
		await until(() => server.closedByClient === 1);
		server.respond = byPassword;
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		expect(server.connections).toBe(2);
	});

	it('on an abort rejects that request with ABORTED and drops the connection', async () => {
		const server = await startServer(() => {});
		const pipelined = client(server.socketPath);
		const controller = new AbortController();
		const first = pipelined.authenticate('alice', 'secret', undefined, {signal: controller.signal});
		const second = pipelined.authenticate('bob', 'secret');
		await until(() => server.lines.length === 2);
		controller.abort();
		const [firstResult, secondResult] = await Promise.allSettled([first, second]);
		expect(firstResult.status === 'rejected' && (firstResult.reason as AuthServiceError).code).toBe('ABORTED');
		expect(secondResult.status === 'rejected' && (secondResult.reason as AuthServiceError).code).toBe('CLOSED_WITHOUT_ANSWER');
		server.respond = byPassword;
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		expect(server.connections).toBe(2);
	});

	it('rejects requests sharing a fired signal as ABORTED', async () => {
		const server = await startServer(() => {});
		const pipelined = client(server.socketPath);
		const controller = new AbortController();
		const requests = [pipelined.authenticate('alice', 'secret', undefined, {signal: controller.signal}), pipelined.authenticate('bob', 'secret', undefined, {signal: controller.signal})];
		await until(() => server.lines.length === 2);
		controller.abort();
		const results = await Promise.allSettled(requests);
		expect(results.map(result => result.status === 'rejected' && (result.reason as AuthServiceError).code)).toEqual(['ABORTED', 'ABORTED']);
	});

	it('on a broken answer rejects with PROTOCOL_ERROR and drops the connection', async () => {
		const server = await startServer((_line, socket, self) => {
			if (self.lines.length === 2) {
				socket.write('ok\nyes\n');
			}
		});
		const pipelined = client(server.socketPath);
		const results = await Promise.allSettled([pipelined.authenticate('alice', 'secret'), pipelined.authenticate('bob', 'secret'), pipelined.authenticate('carol', 'secret')]);
		expect(results.map(result => result.status === 'fulfilled' ? result.value : (result.reason as AuthServiceError).code)).toEqual([true, 'PROTOCOL_ERROR', 'CLOSED_WITHOUT_ANSWER']);
		await until(() => server.closedByClient === 1);
	});

	it('drops the connection on an answer nobody asked for', async () => {
		const server = await startServer((_line, socket) => socket.write('ok\nok\n'));
		const pipelined = client(server.socketPath);
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		await until(() => server.closedByClient === 1);
		server.respond = byPassword;
		await expect(pipelined.authenticate('alice', 'wrong')).resolves.toBe(false);
		expect(server.connections).toBe(2);
	});

	it('never connects for an invalid field', async () => {
		const server = await startServer();
		const pipelined = client(server.socketPath);
		await expect(pipelined.authenticate('alice', 'sec\nret')).rejects.toBeInstanceOf(InvalidFieldError);
		await delay(20);
		expect(server.connections).toBe(0);
	});

	it('close() waits for the answers in flight, and a later request reconnects', async () => {
		const server = await startServer((line, socket, self) => {
			setTimeout(() => byPassword(line, socket, self), 50);
		});
		const pipelined = client(server.socketPath);
		const answer = pipelined.authenticate('alice', 'secret');
		await until(() => server.lines.length === 1);
		await pipelined.close();
		await expect(answer).resolves.toBe(true);
		await until(() => server.closedByClient === 1);
		await expect(pipelined.authenticate('alice', 'secret')).resolves.toBe(true);
		expect(server.connections).toBe(2);
	});

	it('close() without a connection does nothing', async () => {
		await expect(new AuthServiceClient({socketPath: freshPath()}).close()).resolves.toBeUndefined();
	});
});
