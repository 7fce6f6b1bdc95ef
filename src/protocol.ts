/**
The wire protocol of x2gobroker-authservice, with none of its I/O: a request is one line
`<user>\r<password>\r<service>\n`, the answer `ok\n` or `fail\n`.

Fields stay Buffers: the password is never turned into a string, and the caller zeroes the line
once the request has been handed on.
*/
import {isUtf8} from 'node:buffer';

export const answers = {
	ok: Buffer.from('ok\n'),
	fail: Buffer.from('fail\n'),
} as const;

export type FieldLimits = {
	readonly maxUserBytes: number;
	readonly maxPasswordBytes: number;
	readonly maxServiceBytes: number;
};

export type Request = {
	readonly kind: 'request';
	readonly user: Buffer;
	readonly password: Buffer;
	readonly service: Buffer;
};

export type MalformedRequest = {
	readonly kind: 'malformed';
	/** Why, in words that never quote the request. */
	readonly reason: string;
	/** The request's shape, for the log: field count and lengths, never its bytes. */
	readonly shape: string;
};

const carriageReturn = 0x0D;
const lineFeed = 0x0A;
const fieldNames = ['user', 'password', 'service'] as const;
/** What a `LineReader` holds when it holds nothing: one buffer for all, never written to. */
const noBytes = Buffer.alloc(0);

/**
Split a line (without its `\n`) into a request, or say why it is not one.
A line ending in `\r\n` has a fourth, empty field, so it is malformed: never read as the three
before it.
*/
export function parseRequest(line: Buffer, limits: FieldLimits): Request | MalformedRequest {
	const fields: Buffer[] = [];
	let start = 0;
	for (let index = line.indexOf(carriageReturn); index !== -1; index = line.indexOf(carriageReturn, start)) {
		fields.push(line.subarray(start, index));
		start = index + 1;
	}

	fields.push(line.subarray(start));
	if (fields.length !== 3) {
		return malformed(`expected 3 fields, got ${fields.length}`, fields);
	}

	const maxBytes = [limits.maxUserBytes, limits.maxPasswordBytes, limits.maxServiceBytes];
	for (let index = 0; index < 3; index++) {
		const field = fields[index]!;
		const name = fieldNames[index]!;
		if (field.length === 0) {
			return malformed(`empty ${name}`, fields);
		}

		if (field.length > maxBytes[index]!) {
			return malformed(`${name} longer than ${maxBytes[index]} bytes`, fields);
		}

		if (field.includes(0)) {
			return malformed(`NUL byte in ${name}`, fields);
		}

		if (!isUtf8(field)) {
			return malformed(`${name} is not valid UTF-8`, fields);
		}
	}

	const [user, password, service] = fields as [Buffer, Buffer, Buffer];
	return {kind: 'request', user, password, service};
}

/** The shape is worked out only for a line that is not a request: most are. */
function malformed(reason: string, fields: readonly Buffer[]): MalformedRequest {
	return {kind: 'malformed', reason, shape: `fields=${fields.length} bytes=${fields.map(field => field.length).join(',')}`};
}

/**
Cuts a byte stream into lines, wherever the chunk boundaries fall, holding no more than
`maxLineBytes` of an unfinished line. Lines are handed out one at a time (`next()`), so a caller
that has enough requests in flight can stop taking them and pause its socket.
*/
export class LineReader {
	readonly #maxLineBytes: number;
	#buffer: Buffer = noBytes;
	#offset = 0;

	constructor(maxLineBytes: number) {
		this.#maxLineBytes = maxLineBytes;
	}

	push(chunk: Buffer): void {
		const rest = this.#buffer.subarray(this.#offset);
		this.#buffer = rest.length === 0 ? chunk : Buffer.concat([rest, chunk]);
		this.#offset = 0;
		// The bytes before the copy may hold a password; the copy is all that is kept.
		if (rest.length > 0) {
			rest.fill(0);
		}
	}

	/**
	@returns The next whole line without its `\n`, `undefined` when none is complete yet, or
	`overlong` when the unfinished line is already longer than `maxLineBytes` (the stream cannot be
	read on from there).
	*/
	next(): Buffer | 'overlong' | undefined {
		const end = this.#buffer.indexOf(lineFeed, this.#offset);
		const lineLength = (end === -1 ? this.#buffer.length : end) - this.#offset;
		if (lineLength > this.#maxLineBytes) {
			this.clear();
			return 'overlong';
		}

		if (end === -1) {
			return undefined;
		}

		const line = this.#buffer.subarray(this.#offset, end);
		this.#offset = end + 1;
		return line;
	}

	/** Bytes held of unfinished or unread lines. */
	get bufferedBytes(): number {
		return this.#buffer.length - this.#offset;
	}

	/** Zero and drop everything held. */
	clear(): void {
		this.#buffer.fill(0);
		this.#buffer = noBytes;
		this.#offset = 0;
	}
}
