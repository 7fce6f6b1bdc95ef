/**
The frames the daemon and a `pam-authservice-worker` exchange over the worker's stdin and stdout.

Every number is little-endian. Every frame is `u32 payloadLength` followed by the payload, so no
delimiter ever has to be searched for inside a secret.

Request payload, four fields, each `u32 length` + bytes, in this order:
`service`, `user`, `password`, `ruser` (an empty `ruser` leaves `PAM_RUSER` unset).

Response payload:
`i32 pamCode`, `u8 step`, `u32 delayUs`, `u32 textLength` + `pam_strerror` text,
`u16 messageCount`, then per message `u8 style` + `u32 length` + bytes.

`native/pam-authservice-worker.c` is the other side of this file; change both together.
*/

/** The largest request payload a worker accepts; it exits on a larger one. */
export const maxRequestPayloadBytes = 65_536;

/** The largest response payload the daemon accepts; a larger one means the worker is broken. */
export const maxResponsePayloadBytes = 1_048_576;

/** Where a check stopped. `none` means it passed both `pam_authenticate` and `pam_acct_mgmt`. */
export const checkSteps = ['none', 'pam_start', 'pam_set_item', 'pam_authenticate', 'pam_acct_mgmt', 'request'] as const;
export type CheckStep = (typeof checkSteps)[number];

/** PAM message styles, as numbered in `<security/_pam_types.h>`. */
const messageStyles: Readonly<Record<number, PamMessageStyle>> = {
	1: 'prompt_echo_off',
	2: 'prompt_echo_on',
	3: 'error',
	4: 'info',
};
export type PamMessageStyle = 'prompt_echo_off' | 'prompt_echo_on' | 'error' | 'info' | 'unknown';

export type PamMessage = {
	readonly style: PamMessageStyle;
	readonly text: string;
};

export type CheckRequest = {
	readonly service: Buffer;
	readonly user: Buffer;
	/** Zeroed by its owner once the check is done (the pool zeroes only its own copy); never turned into a string. */
	readonly password: Buffer;
	/** The caller's user name, for `PAM_RUSER`; empty or absent leaves it unset. */
	readonly ruser?: Buffer;
};

export type WorkerResult = {
	/** The PAM return code of the step that decided the result (`0`, `PAM_SUCCESS`, when it passed). */
	readonly pamCode: number;
	readonly step: CheckStep;
	/** The failure delay a module asked for (`pam_fail_delay`), which the worker did not sleep. */
	readonly delayUs: number;
	/** `pam_strerror(pamCode)`. */
	readonly text: string;
	/** What the PAM modules said through the conversation: for the log, never for the caller. */
	readonly messages: readonly PamMessage[];
};

/**
Encode a request into one buffer. The caller should zero the returned buffer once it is written,
since it holds the password.
*/
export function encodeRequest(request: CheckRequest): Buffer {
	const fields = [request.service, request.user, request.password, request.ruser ?? Buffer.alloc(0)];
	const payloadLength = fields.reduce((sum, field) => sum + 4 + field.length, 0);
	if (payloadLength > maxRequestPayloadBytes) {
		throw new RangeError(`A worker request cannot be larger than ${maxRequestPayloadBytes} bytes`);
	}

	const frame = Buffer.allocUnsafeSlow(4 + payloadLength);
	let offset = frame.writeUInt32LE(payloadLength, 0);
	for (const field of fields) {
		offset = frame.writeUInt32LE(field.length, offset);
		offset += field.copy(frame, offset);
	}

	return frame;
}

export class WorkerProtocolError extends Error {
	override name = 'WorkerProtocolError' as const;
}

/** A function of its own, not a closure over `decodeResponse`'s offset: one fewer object a response. */
function need(payload: Buffer, offset: number, bytes: number): void {
	if (offset + bytes > payload.length) {
		throw new WorkerProtocolError(`Truncated worker response: needed ${bytes} bytes at offset ${offset} of ${payload.length}`);
	}
}

/**
Decode one response payload (without its length prefix).

@throws {WorkerProtocolError} When the payload is not a well-formed response.
*/
export function decodeResponse(payload: Buffer): WorkerResult {
	let offset = 0;
	need(payload, offset, 4 + 1 + 4 + 4);
	const pamCode = payload.readInt32LE(offset);
	offset += 4;
	const stepIndex = payload.readUInt8(offset);
	offset += 1;
	const delayUs = payload.readUInt32LE(offset);
	offset += 4;
	const textLength = payload.readUInt32LE(offset);
	offset += 4;
	need(payload, offset, textLength);
	const text = payload.toString('utf8', offset, offset + textLength);
	offset += textLength;

	need(payload, offset, 2);
	const messageCount = payload.readUInt16LE(offset);
	offset += 2;
	const messages: PamMessage[] = [];
	for (let index = 0; index < messageCount; index++) {
		need(payload, offset, 1 + 4);
		const style = messageStyles[payload.readUInt8(offset)] ?? 'unknown';
		offset += 1;
		const length = payload.readUInt32LE(offset);
		offset += 4;
		need(payload, offset, length);
		messages.push({style, text: payload.toString('utf8', offset, offset + length)});
		offset += length;
	}

	const step = checkSteps[stepIndex];
	if (step === undefined) {
		throw new WorkerProtocolError(`Unknown check step ${stepIndex} in worker response`);
	}

	if (offset !== payload.length) {
		throw new WorkerProtocolError(`Worker response has ${payload.length - offset} trailing bytes`);
	}

	return {pamCode, step, delayUs, text, messages};
}

/** Split the worker's stdout into response payloads, wherever the chunk boundaries fall. */
export class ResponseReader {
	/**
	An unfinished frame: the bytes after the last whole one, as they came. Joined once the frame is
	complete, not at every chunk: a large response in many small chunks is copied once, not once a
	chunk. Responses mostly arrive whole, and then this stays empty.
	*/
	#pending: Buffer[] = [];
	#pendingBytes = 0;

	/**
	@returns The payloads completed by this chunk, in order.
	@throws {WorkerProtocolError} When a frame announces more than `maxResponsePayloadBytes`.
	*/
	push(chunk: Buffer): Buffer[] {
		let buffered = chunk;
		if (this.#pending.length > 0) {
			this.#pending.push(chunk);
			this.#pendingBytes += chunk.length;
			if (this.#pendingBytes < 4) {
				return [];
			}

			if (this.#pending[0]!.length < 4) {
				// The length prefix itself was cut: join what there is (a few bytes at most so far).
				this.#pending = [Buffer.concat(this.#pending, this.#pendingBytes)];
			}

			if (this.#pendingBytes < 4 + payloadLengthAt(this.#pending[0]!, 0)) {
				return [];
			}

			buffered = Buffer.concat(this.#pending, this.#pendingBytes);
			this.#pending = [];
			this.#pendingBytes = 0;
		}

		const payloads: Buffer[] = [];
		let offset = 0;
		while (buffered.length - offset >= 4) {
			const payloadLength = payloadLengthAt(buffered, offset);
			if (buffered.length - offset - 4 < payloadLength) {
				break;
			}

			payloads.push(buffered.subarray(offset + 4, offset + 4 + payloadLength));
			offset += 4 + payloadLength;
		}

		if (offset < buffered.length) {
			this.#pending.push(buffered.subarray(offset));
			this.#pendingBytes = buffered.length - offset;
		}

		return payloads;
	}
}

/** The payload length a frame at `offset` announces, refused over the limit before anything waits for it. */
function payloadLengthAt(buffer: Buffer, offset: number): number {
	const payloadLength = buffer.readUInt32LE(offset);
	if (payloadLength > maxResponsePayloadBytes) {
		throw new WorkerProtocolError(`Worker response of ${payloadLength} bytes is over the limit`);
	}

	return payloadLength;
}
