/**
Every error this package throws on purpose: one base class, one subclass per cause, each with a
stable `code` from `errorCodes`. No message ever quotes a password, nor what a server answered (a
wrong socket could echo the request back).
*/

/** The stable `code` of every error, by name. Compare `error.code` with these, not messages. */
export const errorCodes = {
	/** No socket file at the path: the daemon is not running, or the path is wrong. */
	socketMissing: 'SOCKET_MISSING',
	/** The socket or a folder on its path may not be used by this user (EACCES, EPERM). */
	permissionDenied: 'PERMISSION_DENIED',
	/** A socket file with nobody listening on it: a daemon that died (ECONNREFUSED). */
	connectionRefused: 'CONNECTION_REFUSED',
	/** Connecting failed for another reason, such as a path that is not a socket. */
	connectionFailed: 'CONNECTION_FAILED',
	/** No answer within `timeoutMs`. */
	timeout: 'TIMEOUT',
	/** The connection ended, or was dropped, before the answer came. */
	closedWithoutAnswer: 'CLOSED_WITHOUT_ANSWER',
	/** The server answered something other than `ok` or `fail`. */
	protocolError: 'PROTOCOL_ERROR',
	/** The caller's `AbortSignal` fired. */
	aborted: 'ABORTED',
	/** A user, password or service the protocol cannot carry. Nothing was sent. */
	invalidField: 'INVALID_FIELD',
	/** The daemon's configuration (flags, environment) is wrong. */
	configError: 'CONFIG_ERROR',
	/** The daemon cannot listen on its socket path. */
	listenError: 'LISTEN_ERROR',
} as const;

export type ErrorCode = (typeof errorCodes)[keyof typeof errorCodes];

/** The base of every error this package throws on purpose. */
export abstract class AuthServiceError extends Error {
	override name: string = 'AuthServiceError';
	/** Stable, one of `errorCodes`; messages may change, codes do not. */
	abstract readonly code: ErrorCode;
}

/** There is no socket file at `socketPath` (ENOENT). */
export class SocketMissingError extends AuthServiceError {
	override name = 'SocketMissingError' as const;
	override readonly code = errorCodes.socketMissing;
	readonly socketPath: string;

	constructor(socketPath: string, options?: ErrorOptions) {
		super(`Cannot reach ${socketPath}: no such file`, options);
		this.socketPath = socketPath;
	}
}

/** This user may not connect to `socketPath` (EACCES, EPERM). */
export class PermissionDeniedError extends AuthServiceError {
	override name = 'PermissionDeniedError' as const;
	override readonly code = errorCodes.permissionDenied;
	readonly socketPath: string;

	constructor(socketPath: string, options?: ErrorOptions) {
		super(`Cannot reach ${socketPath}: permission denied`, options);
		this.socketPath = socketPath;
	}
}

/** Nothing listens on the socket file at `socketPath`, a stale one (ECONNREFUSED). */
export class ConnectionRefusedError extends AuthServiceError {
	override name = 'ConnectionRefusedError' as const;
	override readonly code = errorCodes.connectionRefused;
	readonly socketPath: string;

	constructor(socketPath: string, options?: ErrorOptions) {
		super(`Cannot reach ${socketPath}: connection refused`, options);
		this.socketPath = socketPath;
	}
}

/** Connecting to `socketPath` failed with `errno`, which has no error class of its own. */
export class ConnectionFailedError extends AuthServiceError {
	override name = 'ConnectionFailedError' as const;
	override readonly code = errorCodes.connectionFailed;
	readonly socketPath: string;
	/** Such as `ENOTSOCK`, or `undefined` when the failure had no errno. */
	readonly errno: string | undefined;

	constructor(socketPath: string, errno: string | undefined, options?: ErrorOptions) {
		super(`Cannot reach ${socketPath}: ${errno ?? 'connection failed'}`, options);
		this.socketPath = socketPath;
		this.errno = errno;
	}
}

/** No answer came from `socketPath` within `timeoutMs` (connecting included). */
export class TimeoutError extends AuthServiceError {
	override name = 'TimeoutError' as const;
	override readonly code = errorCodes.timeout;
	readonly socketPath: string;
	readonly timeoutMs: number;

	constructor(socketPath: string, timeoutMs: number, options?: ErrorOptions) {
		super(`No answer from ${socketPath} within ${timeoutMs} ms`, options);
		this.socketPath = socketPath;
		this.timeoutMs = timeoutMs;
	}
}

/**
The connection to `socketPath` ended before the answer came: the server closed it or reset it, or
the client dropped it because another request on it failed (then `cause` is that request's error).
*/
export class ClosedWithoutAnswerError extends AuthServiceError {
	override name = 'ClosedWithoutAnswerError' as const;
	override readonly code = errorCodes.closedWithoutAnswer;
	readonly socketPath: string;

	/**
	@param reason - Why the connection ended, when the client ended it.
	*/
	constructor(socketPath: string, reason?: string, options?: ErrorOptions) {
		super(reason === undefined
			? `${socketPath} closed the connection without answering`
			: `The connection to ${socketPath} was dropped before the answer came: ${reason}`, options);
		this.socketPath = socketPath;
	}
}

/** The server at `socketPath` answered a line that is neither `ok` nor `fail`, or answered unasked. */
export class ProtocolError extends AuthServiceError {
	override name = 'ProtocolError' as const;
	override readonly code = errorCodes.protocolError;
	readonly socketPath: string;

	/**
	@param what - What was wrong, in words that do not quote the answer.
	*/
	constructor(socketPath: string, what: string, options?: ErrorOptions) {
		super(`${socketPath} does not speak the x2gobroker-authservice protocol: ${what}`, options);
		this.socketPath = socketPath;
	}
}

/** The caller's `AbortSignal` fired; `cause` is its `reason`. */
export class AbortError extends AuthServiceError {
	override name = 'AbortError' as const;
	override readonly code = errorCodes.aborted;

	constructor(options?: ErrorOptions) {
		super('The check was aborted', options);
	}
}

export type FieldName = 'user' | 'password' | 'service';

/**
A field the protocol cannot carry: empty, or holding a carriage return, a line feed, a NUL byte or
bytes that are not UTF-8. Thrown before connecting, so nothing was sent.
*/
export class InvalidFieldError extends AuthServiceError {
	override name = 'InvalidFieldError' as const;
	override readonly code = errorCodes.invalidField;
	readonly field: FieldName;

	/**
	@param problem - Completes "The `user` field cannot …", such as `be empty`; never quotes the value.
	*/
	constructor(field: FieldName, problem: string, options?: ErrorOptions) {
		super(`The \`${field}\` field cannot ${problem}`, options);
		this.field = field;
	}
}

type ConnectErrorClass = new (socketPath: string, options?: ErrorOptions) => AuthServiceError;

/** What a failed connect means, by errno; any other errno is a `ConnectionFailedError`. */
const connectErrors: Readonly<Partial<Record<string, ConnectErrorClass>>> = {
	ENOENT: SocketMissingError,
	EACCES: PermissionDeniedError,
	EPERM: PermissionDeniedError,
	ECONNREFUSED: ConnectionRefusedError,
};

/** The error for a failed connect to `socketPath`, by its errno. */
export function connectErrorFor(socketPath: string, error: NodeJS.ErrnoException): AuthServiceError {
	const ErrorClass = connectErrors[error.code ?? ''];
	return ErrorClass === undefined
		? new ConnectionFailedError(socketPath, error.code, {cause: error})
		: new ErrorClass(socketPath, {cause: error});
}

/** The daemon's configuration is wrong; `option` names the option (config key or flag). */
export class ConfigError extends AuthServiceError {
	override name = 'ConfigError' as const;
	override readonly code = errorCodes.configError;
	readonly option: string;

	constructor(message: string, option: string, options?: ErrorOptions) {
		super(message, options);
		this.option = option;
	}
}

/** The daemon cannot listen on its socket path. */
export class ListenError extends AuthServiceError {
	override name = 'ListenError' as const;
	override readonly code = errorCodes.listenError;
}
