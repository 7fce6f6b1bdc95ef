/**
The caller's side of the x2gobroker-authservice protocol: `authenticate()` asks once on its own
connection, as x2gobroker's own client does; `AuthServiceClient` keeps one connection and
pipelines many requests on it, for busy brokers.

A request is `<user>\r<password>\r<service>\n`, the answer `ok\n` or `fail\n`, answers in request
order. Nothing marks which request an answer belongs to, so a connection on which one request is
given up (timeout, abort, a broken answer) is dropped: its later answers could not be matched.
*/
import {isUtf8} from 'node:buffer';
import net from 'node:net';
import {
	AbortError,
	type AuthServiceError,
	ClosedWithoutAnswerError,
	connectErrorFor,
	type FieldName,
	InvalidFieldError,
	ProtocolError,
	TimeoutError,
} from './errors.js';
import {resolveSocketPath} from './socket-path.js';

/** A field as the caller has it: a string is sent as UTF-8, a Buffer as it is. */
export type Field = string | Buffer;

export type AuthenticateOptions = {
	/**
	The daemon's socket.
	@default resolveSocketPath(): `$X2GOBROKER_AUTHSERVICE_SOCKET`, else '/run/x2gobroker/x2gobroker-authservice.socket'
	*/
	readonly socketPath?: string;
	/**
	How long to wait for the answer, connecting included; `Infinity` waits for ever.
	@default 10000
	*/
	readonly timeoutMs?: number;
	/** Gives up the check: the promise rejects with an `AbortError`. */
	readonly signal?: AbortSignal;
};

export type ClientOptions = Omit<AuthenticateOptions, 'signal'>;

export type RequestOptions = Pick<AuthenticateOptions, 'signal'>;

/** The service x2gobroker asks for. */
export const defaultService = 'x2gobroker';

/** @default 10000 */
export const defaultTimeoutMs = 10_000;

/** The longest finite `timeoutMs`: a longer delay makes `setTimeout` fire after 1 ms. */
export const maxTimeoutMs = 2_147_483_647;

// `fail` is the longest answer; a longer unfinished line is not going to become one.
const maxAnswerBytes = 16;

const carriageReturn = 0x0D;
const lineFeed = 0x0A;
const answerOk = Buffer.from('ok');
const answerFail = Buffer.from('fail');

const forbiddenBytes = [
	[carriageReturn, 'contain a carriage return'],
	[lineFeed, 'contain a line feed'],
	[0x00, 'contain a NUL byte'],
] as const;

const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
Ask the daemon once, on a connection of its own, whether `password` is right for `user`.

The request is built in a Buffer of its own and zeroed once written; a string password stays in
memory as long as the caller keeps it, so pass a Buffer (and zero it) to control that.

@param service - The PAM service to check against; the daemon must allow it.
@returns `true` when the daemon answered `ok`, `false` when it answered `fail`.
@throws {InvalidFieldError} Before connecting, when a field is empty or holds `\r`, `\n`, NUL or bytes that are not UTF-8.
@throws {SocketMissingError | PermissionDeniedError | ConnectionRefusedError | ConnectionFailedError} When it cannot connect.
@throws {TimeoutError | ClosedWithoutAnswerError | ProtocolError | AbortError} When no usable answer came.

@example
```
import {authenticate} from 'pam-authservice';

if (await authenticate('alice', password)) {
	// let alice in
}
```
*/
export async function authenticate(user: Field, password: Field, service: Field = defaultService, options: AuthenticateOptions = {}): Promise<boolean> {
	const timeoutMs = validateTimeout(options.timeoutMs ?? defaultTimeoutMs);
	validateFields(user, password, service);
	throwIfAborted(options.signal);

	const connection = new Connection(options.socketPath ?? resolveSocketPath());
	try {
		return await connection.send(encodeRequest(user, password, service), timeoutMs, options.signal);
	} finally {
		connection.destroy();
	}
}

/**
Keeps one connection to the daemon and pipelines requests on it: each is written at once, and
answers are matched to requests in order.

It connects on the first request, and again on the next request after the connection ended. When
the connection fails or the daemon closes it, every request waiting on it rejects. A request that
times out or is aborted rejects with `TimeoutError` or `AbortError`, and since later answers could
then no longer be matched, the connection is dropped: the other requests waiting on it reject with
`ClosedWithoutAnswerError` (its `cause` is the first request's error), and may be asked again.

An idle client does not keep the process running; a request waiting for its answer does.

@example
```
const client = new AuthServiceClient();
const [alice, bob] = await Promise.all([
	client.authenticate('alice', alicePassword),
	client.authenticate('bob', bobPassword),
]);
await client.close();
```
*/
export class AuthServiceClient {
	/** The socket this client connects to. */
	readonly socketPath: string;
	/** The timeout of each request, connecting included. */
	readonly timeoutMs: number;
	#connection: Connection | undefined;

	constructor(options: ClientOptions = {}) {
		this.timeoutMs = validateTimeout(options.timeoutMs ?? defaultTimeoutMs);
		this.socketPath = options.socketPath ?? resolveSocketPath();
	}

	/**
	Ask whether `password` is right for `user`, on the shared connection.
	@returns `true` when the daemon answered `ok`, `false` when it answered `fail`.
	@throws Like `authenticate()`.
	*/
	async authenticate(user: Field, password: Field, service: Field = defaultService, options: RequestOptions = {}): Promise<boolean> {
		validateFields(user, password, service);
		throwIfAborted(options.signal);
		if (!this.#connection?.usable) {
			this.#connection = new Connection(this.socketPath);
		}

		return this.#connection.send(encodeRequest(user, password, service), this.timeoutMs, options.signal);
	}

	/**
	Close the connection once the requests on it are answered (or time out). A later request opens
	a new one.
	*/
	async close(): Promise<void> {
		const connection = this.#connection;
		this.#connection = undefined;
		await connection?.close();
	}
}

/**
Check that the protocol can carry these fields.
@throws {InvalidFieldError} Naming the first field that it cannot carry.
*/
export function validateFields(user: Field, password: Field, service: Field): void {
	validateField('user', user);
	validateField('password', password);
	validateField('service', service);
}

/**
Check that the protocol can carry `value` as the field `name`.
@throws {InvalidFieldError}
*/
export function validateField(name: FieldName, value: Field): void {
	if (typeof value === 'string') {
		if (value.length === 0) {
			throw new InvalidFieldError(name, 'be empty');
		}

		for (const [byte, problem] of forbiddenBytes) {
			if (value.includes(String.fromCharCode(byte))) {
				throw new InvalidFieldError(name, problem);
			}
		}

		// It would be sent as U+FFFD, which is not what the caller has.
		if (loneSurrogate.test(value)) {
			throw new InvalidFieldError(name, 'hold a lone UTF-16 surrogate');
		}

		return;
	}

	if (!Buffer.isBuffer(value)) {
		throw new TypeError(`The \`${name}\` field must be a string or a Buffer`);
	}

	if (value.length === 0) {
		throw new InvalidFieldError(name, 'be empty');
	}

	for (const [byte, problem] of forbiddenBytes) {
		if (value.includes(byte)) {
			throw new InvalidFieldError(name, problem);
		}
	}

	if (!isUtf8(value)) {
		throw new InvalidFieldError(name, 'be bytes that are not UTF-8');
	}
}

/** The request line, in a buffer outside Node's shared pool, so that zeroing it zeroes the only copy. */
function encodeRequest(user: Field, password: Field, service: Field): Buffer {
	const fields = [user, password, service];
	const length = fields.reduce((sum, field) => sum + 1 + (typeof field === 'string' ? Buffer.byteLength(field) : field.length), 0);
	const request = Buffer.allocUnsafeSlow(length);
	let offset = 0;
	for (const [index, field] of fields.entries()) {
		offset += typeof field === 'string' ? request.write(field, offset) : field.copy(request, offset);
		request[offset++] = index === fields.length - 1 ? lineFeed : carriageReturn;
	}

	return request;
}

function validateTimeout(timeoutMs: number): number {
	if (timeoutMs === Number.POSITIVE_INFINITY || (typeof timeoutMs === 'number' && timeoutMs > 0 && timeoutMs <= maxTimeoutMs)) {
		return timeoutMs;
	}

	throw new RangeError(`The \`timeoutMs\` option must be a number of milliseconds from 1 to ${maxTimeoutMs}, or Infinity, not \`${String(timeoutMs)}\``);
}

function throwIfAborted(signal: AbortSignal | undefined): void {
	if (signal?.aborted) {
		throw new AbortError({cause: signal.reason});
	}
}

type Pending = {
	readonly signal: AbortSignal | undefined;
	resolve(ok: boolean): void;
	reject(error: Error): void;
};

/** One connection and the requests waiting for their answers on it, first asked first. */
class Connection {
	readonly #socketPath: string;
	readonly #socket: net.Socket;
	readonly #pending: Pending[] = [];
	#connected = false;
	#ended = false;
	#closing = false;
	#unfinishedAnswer: Buffer = Buffer.alloc(0);

	constructor(socketPath: string) {
		this.#socketPath = socketPath;
		this.#socket = net.createConnection(socketPath);
		this.#socket.on('connect', () => {
			this.#connected = true;
		});
		this.#socket.on('data', chunk => {
			this.#read(chunk);
		});
		this.#socket.on('end', () => {
			this.#ended = true;
		});
		this.#socket.on('error', error => {
			this.#ended = true;
			this.#rejectAll(this.#errorFor(error));
		});
		this.#socket.on('close', () => {
			this.#ended = true;
			this.#rejectAll(new ClosedWithoutAnswerError(socketPath));
		});
	}

	/** Whether a request sent now could still be answered. */
	get usable(): boolean {
		return !this.#ended && !this.#closing && !this.#socket.destroyed;
	}

	/** Write `request` (zeroed once written) and wait for its answer. */
	async send(request: Buffer, timeoutMs: number, signal: AbortSignal | undefined): Promise<boolean> {
		try {
			return await new Promise<boolean>((resolve, reject) => {
				let timer: NodeJS.Timeout | undefined;
				const onAbort = (): void => {
					this.#giveUp(entry, new AbortError({cause: signal?.reason}), 'another request on it was aborted');
				};

				const settled = (): void => {
					clearTimeout(timer);
					signal?.removeEventListener('abort', onAbort);
					if (this.#pending.length === 0) {
						this.#idle();
					}
				};

				const entry: Pending = {
					signal,
					resolve(ok) {
						settled();
						resolve(ok);
					},
					reject(error) {
						settled();
						reject(error);
					},
				};

				this.#pending.push(entry);
				this.#socket.ref();
				this.#socket.write(request, () => request.fill(0));
				if (timeoutMs !== Number.POSITIVE_INFINITY) {
					timer = setTimeout(() => {
						this.#giveUp(entry, new TimeoutError(this.#socketPath, timeoutMs), 'another request on it timed out');
					}, timeoutMs);
				}

				signal?.addEventListener('abort', onAbort, {once: true});
			});
		} finally {
			// Settled means answered (so written) or the socket destroyed, so no write still needs it.
			request.fill(0);
		}
	}

	/** Close once every request on this connection is settled. */
	async close(): Promise<void> {
		this.#closing = true;
		if (this.#socket.closed) {
			return;
		}

		const closed = new Promise<void>(resolve => this.#socket.once('close', () => resolve()));
		if (this.#pending.length === 0) {
			this.#socket.destroy();
		}

		await closed;
	}

	destroy(): void {
		this.#ended = true;
		this.#socket.destroy();
	}

	#idle(): void {
		if (this.#closing) {
			this.#socket.destroy();
		} else if (!this.#socket.destroyed) {
			this.#socket.unref();
		}
	}

	#read(chunk: Buffer): void {
		const data = this.#unfinishedAnswer.length === 0 ? chunk : Buffer.concat([this.#unfinishedAnswer, chunk]);
		let start = 0;
		for (let end = data.indexOf(lineFeed); end !== -1; end = data.indexOf(lineFeed, start)) {
			const answer = data.subarray(start, end);
			start = end + 1;
			const entry = this.#pending.shift();
			if (entry === undefined) {
				this.#breach(undefined, 'it answered a request that was not asked');
				return;
			}

			if (answer.equals(answerOk)) {
				entry.resolve(true);
			} else if (answer.equals(answerFail)) {
				entry.resolve(false);
			} else {
				this.#breach(entry, `it answered a line of ${answer.length} bytes that is neither ok nor fail`);
				return;
			}
		}

		this.#unfinishedAnswer = data.subarray(start);
		if (this.#unfinishedAnswer.length > maxAnswerBytes) {
			this.#breach(this.#pending.shift(), `it answered more than ${maxAnswerBytes} bytes without a line feed`);
		}
	}

	#breach(entry: Pending | undefined, what: string): void {
		this.#giveUp(entry, new ProtocolError(this.#socketPath, what), 'the server broke the protocol');
	}

	/**
	Reject `entry` with `error`, drop the connection, and reject the other requests on it as dropped
	(or as aborted, when their own signal has fired too).
	*/
	#giveUp(entry: Pending | undefined, error: AuthServiceError, reasonForOthers: string): void {
		const others = this.#pending.splice(0).filter(other => other !== entry);
		this.destroy();
		entry?.reject(error);
		for (const other of others) {
			other.reject(other.signal?.aborted
				? new AbortError({cause: other.signal.reason})
				: new ClosedWithoutAnswerError(this.#socketPath, reasonForOthers, {cause: error}));
		}
	}

	#rejectAll(error: AuthServiceError): void {
		for (const entry of this.#pending.splice(0)) {
			entry.reject(error);
		}
	}

	#errorFor(error: NodeJS.ErrnoException): AuthServiceError {
		if (this.#connected) {
			return new ClosedWithoutAnswerError(this.#socketPath, undefined, {cause: error});
		}

		return connectErrorFor(this.#socketPath, error);
	}
}
